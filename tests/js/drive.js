// What both SDK drivers (state.js over HTTP, grpc_state.js over gRPC) share: the client built
// from the environment (DAPR_HTTP_PORT or DAPR_GRPC_PORT, STORE, KEY_PREFIX), the JSON report
// written to argv[2], and exit code 1 with the stack when a step throws past its own handling.
"use strict";

const fs = require("fs");
const { DaprClient, CommunicationProtocolEnum, LogLevel } = require("@dapr/dapr");

// steps({client, state, store, p}) returns the report object.
function drive(protocol, steps) {
  const grpc = protocol === CommunicationProtocolEnum.GRPC;
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: grpc ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
    communicationProtocol: protocol,
    logger: { level: LogLevel.Error },
  });
  steps({ client, state: client.state, store: process.env.STORE, p: process.env.KEY_PREFIX })
    .then(async (report) => {
      await client.stop();
      fs.writeFileSync(process.argv[2], JSON.stringify(report, null, 2));
    })
    .catch((err) => {
      console.error(err && err.stack ? err.stack : err);
      process.exit(1);
    });
}

module.exports = { drive };
