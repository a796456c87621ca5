"""A test app for `devinit run`: reports what it was given, talks to its server, and exits or
stops as a test asks (tests/test_run.py, tests/test_run_file.py).

    python probe.py [report.json] [--save KEY=VALUE] [--sleep S] [--exit N | --wait | --ignore-signals]

- report.json: the environment variables an app of a sidecar gets, the pid and cwd;
- --save: saves KEY=VALUE through DAPR_HTTP_ENDPOINT (the store is $STORE, default statestore);
- --sleep: sleeps S seconds;
- --wait: runs until SIGINT/SIGTERM, then saves 'stopped-by' = the names of the signals it got
  (its server must still answer then; a signal sent twice shows twice) and exits with code 7;
- --ignore-signals: ignores SIGINT/SIGTERM (devinit run must kill it after the grace period).

Only the standard library: it runs in any Python.
"""

import json
import os
import signal
import sys
import time
import urllib.request

NAMES = ("APP_ID", "APP_PORT", "DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "DAPR_HTTP_ENDPOINT", "DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN")


def save(key, value):
    url = f"{os.environ['DAPR_HTTP_ENDPOINT']}/v1.0/state/{os.environ.get('STORE', 'statestore')}"
    body = json.dumps([{"key": key, "value": value}]).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("DAPR_API_TOKEN"):
        headers["dapr-api-token"] = os.environ["DAPR_API_TOKEN"]
    with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10) as r:
        assert r.status == 204, r.status


def wait_for_signals():
    got = []

    def note(sig, frame):
        got.append(signal.Signals(sig).name)

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    print("waiting", flush=True)
    while not got:
        time.sleep(0.05)
    time.sleep(0.5)  # a signal sent a second time shows in the list
    save("stopped-by", ",".join(got))
    print(f"stopped by {','.join(got)}", flush=True)
    return 7


def main(argv):
    args = list(argv)
    if args and not args[0].startswith("--"):
        report = {n: os.environ.get(n) for n in NAMES}
        report.update(pid=os.getpid(), cwd=os.getcwd(), extra={k: v for k, v in os.environ.items() if k.startswith("PROBE_")})
        with open(args.pop(0), "w") as f:
            json.dump(report, f)
    while args:
        arg = args.pop(0)
        if arg == "--save":
            key, _, value = args.pop(0).partition("=")
            save(key, value)
            print(f"saved {key}", flush=True)
        elif arg == "--sleep":
            time.sleep(float(args.pop(0)))
        elif arg == "--exit":
            print("exiting", flush=True)
            return int(args.pop(0))
        elif arg == "--wait":
            return wait_for_signals()
        elif arg == "--ignore-signals":
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ignoring signals", flush=True)
            while True:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
