"""Orders through the state API with the official Python SDK (gRPC), in the style of the
dapr/quickstarts state_management app: each order is saved, read back and printed; order 1 is
deleted at the end, the others stay. ORDER_COUNT orders (default 5)."""

import json
import os

from dapr.clients import DaprClient

STORE = "statestore"
count = int(os.environ.get("ORDER_COUNT", "5"))

with DaprClient() as client:
    for n in range(1, count + 1):
        order = {"orderId": n, "item": f"item-{n}"}
        client.save_state(STORE, str(n), json.dumps(order), state_metadata={"contentType": "application/json"})
        print(f"Saving Order: {order}", flush=True)
        got = json.loads(client.get_state(STORE, str(n)).data)
        assert got == order, (got, order)
        print(f"Getting Order: {got}", flush=True)
    client.delete_state(STORE, "1")
    print("Deleting Order: 1", flush=True)
    print(f"done with {count} orders", flush=True)
