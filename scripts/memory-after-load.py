"""Memory after load: leak or allocator retention?

Runs `protosync serve` (the binary given, on SQLite in a temp dir, loopback
only) through writes without clients, 2,000 subscribed WebSocket clients,
their departure and three cycles of 500, printing the process's RSS and the
allocator's figures from /metrics at each phase. The figures in
docs/operations.md#memory come from it:

    cargo build --release -p protosync
    pip install websockets
    python3 scripts/memory-after-load.py target/release/protosync
"""
import asyncio, json, os, subprocess, sys, tempfile, time, urllib.request, shutil, socket

BIN = sys.argv[1]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
port = free_port()
data = tempfile.mkdtemp(prefix="protosync-memory-")
proc = subprocess.Popen([BIN, "serve", "--database", f"sqlite:{data}/db", "--schema", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "schema"),
                         "--listen", f"127.0.0.1:{port}", "--trust-unauthenticated"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PROTOSYNC_LOG": "warn"})
while b"listening" not in proc.stdout.readline():
    pass
base = f"http://127.0.0.1:{port}"

def rss_mib():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
def alloc():
    try:
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        vals = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("protosync_allocator")}
        return " ".join(f"{k.replace('protosync_allocator_','')}={v/2**20:.1f}MiB" for k, v in vals.items())
    except Exception:
        return ""
def report(label):
    print(f"{label:44s} rss={rss_mib():7.1f} MiB {alloc()}", flush=True)

def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())

import websockets
async def subscriber(n, ready, stop, received):
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/sync", max_size=None) as ws:
        await ws.send(json.dumps({"hello": {"protocolVersion": 1}}))
        await ws.recv()
        await ws.send(json.dumps({"subscribe": {"subscriptionId": "s", "query": {"collection": "work_items", "filter": [{"field": "ownerId", "op": "==", "value": f"u{n % 50}"}], "limit": 20}}}))
        await ws.recv()
        ready.release()
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), 0.5)
                received[0] += 1
            except asyncio.TimeoutError:
                pass

async def connections(count, writes):
    ready, stop, received = asyncio.Semaphore(0), asyncio.Event(), [0]
    tasks = [asyncio.create_task(subscriber(i, ready, stop, received)) for i in range(count)]
    for _ in range(count):
        await ready.acquire()
    report(f"{count} connections subscribed")
    await asyncio.get_running_loop().run_in_executor(None, writes)
    await asyncio.sleep(1)
    report(f"{count} connections after writes")
    stop.set()
    await asyncio.gather(*tasks)

def write_round(r, mib=19):
    # 19 MiB per round: 190 documents of ~100 KiB, 10 per mutation
    for b in range(19):
        ops = [{"upsert": {"collection": "work_items", "id": f"d{b}-{i}", "doc": {"ownerId": f"u{(b*10+i) % 50}", "title": "x" * 100_000, "priority": r}}} for i in range(10)]
        post("/v1/mutate", {"ops": ops})

report("start")
for r in range(5):
    write_round(r)
    report(f"control round {r+1} (19 MiB written, no clients)")
asyncio.run(connections(2000, lambda: write_round(9)))
report("2000 connections closed")
for t in (5, 15, 30):
    time.sleep(t - (0 if t == 5 else (5 if t == 15 else 15)))
    report(f"{t} s later")
for cycle in range(3):
    asyncio.run(connections(500, lambda: write_round(20 + cycle)))
    report(f"cycle {cycle+1}: 500 connections opened+closed")
time.sleep(15)
report("15 s later")
proc.terminate()
proc.wait()
shutil.rmtree(data, ignore_errors=True)
