//! Embeds an rpath to the libpython that pyo3 was configured against, so the
//! `ravenwatch` binary loads the same interpreter (and its site-packages) that
//! `pip` installs into, instead of whichever libpython the loader finds first.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
