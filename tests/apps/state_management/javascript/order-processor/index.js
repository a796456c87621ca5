// Orders through the state API with the official JavaScript SDK over HTTP, in the style of the
// dapr/quickstarts state_management app: each order is saved, read back and printed; order 1
// is deleted at the end, the others stay. ORDER_COUNT orders (default 5).
import { CommunicationProtocolEnum, DaprClient, LogLevel } from "@dapr/dapr";

const STORE = "statestore";
const count = Number(process.env.ORDER_COUNT ?? "5");

const client = new DaprClient({
  daprHost: process.env.DAPR_HOST ?? "localhost",
  daprPort: process.env.DAPR_HTTP_PORT,
  communicationProtocol: CommunicationProtocolEnum.HTTP,
  logger: { level: LogLevel.Error },
});

async function main() {
  for (let n = 1; n <= count; n++) {
    const order = { orderId: n, item: `item-${n}` };
    await client.state.save(STORE, [{ key: String(n), value: order }]);
    console.log("Saving Order:", JSON.stringify(order));
    const got = await client.state.get(STORE, String(n));
    if (JSON.stringify(got) !== JSON.stringify(order)) {
      throw new Error(`read back ${JSON.stringify(got)}, saved ${JSON.stringify(order)}`);
    }
    console.log("Getting Order:", JSON.stringify(got));
  }
  await client.state.delete(STORE, "1");
  console.log("Deleting Order: 1");
  console.log(`done with ${count} orders`);
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
