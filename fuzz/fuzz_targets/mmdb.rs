//! GeoIP: arbitrary bytes as a MaxMind DB file, loaded as an `mmdb` table
//! is (verified), then looked up. A corrupt file is an error, never a
//! panic or an endless walk.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = ravenwatch::enrichment::mmdb_batch(data.to_vec()) else { return };
    if let Ok(db) = ravenwatch::enrichment::GeoDb::from_batch(&batch) {
        for ip in ["1.2.3.4", "::1", "2001:db8::1", "255.255.255.255", "not-an-ip"] {
            let _ = db.lookup(ip);
        }
    }
});
