"""A sample in the style of dapr/python-sdk's examples/state_store (written for devinit's tests):
the state API through the official Python SDK over gRPC, as a Dapr user's app calls it.

    devinit run --app-id state-store --resources-path components/ -- python3 state_store.py

Each step prints one line; the last line is 'done'. Exit code 1 on an unexpected answer.
"""

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import StateItem

STORE = "statestore"

with DaprClient() as client:
    client.save_state(STORE, "order-1", "pending")
    print("saved order-1")

    try:
        client.save_state(STORE, "order-1", "shipped", etag="12345")
        raise SystemExit("a save with a stale etag was accepted")
    except grpc.RpcError as err:
        print(f"stale etag refused: {err.code()}")

    client.save_bulk_state(STORE, [StateItem(key="order-2", value="pending"), StateItem(key="order-3", value="paid")])
    print("saved order-2 and order-3")

    got = client.get_state(STORE, "order-1")
    print(f"order-1 is {got.data.decode()} (etag {got.etag})")

    client.save_state(STORE, "order-1", "shipped", etag=got.etag)
    items = client.get_bulk_state(STORE, ["order-1", "order-2", "order-3"]).items
    print("bulk: " + ", ".join(f"{i.key}={i.data.decode()}" for i in items))

    client.execute_state_transaction(
        STORE,
        [
            TransactionalStateOperation(key="order-2", data="cancelled"),
            TransactionalStateOperation(key="order-3", operation_type=TransactionOperationType.delete),
        ],
    )
    after = client.get_bulk_state(STORE, ["order-2", "order-3"]).items
    print("after the transaction: " + ", ".join(f"{i.key}={i.data.decode() or '(none)'}" for i in after))

    client.delete_state(STORE, "order-2")
    print(f"order-2 after delete: {client.get_state(STORE, 'order-2').data.decode() or '(none)'}")
    print("done")
