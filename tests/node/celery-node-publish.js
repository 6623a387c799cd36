"use strict";
// Publishes clientflow events with celery-node, as a Node.js upstream system would.
//
// stdin (JSON): {"broker": "redis://host:port/db", "events": [{"task": "clients.add",
//   "kwargs": {...}, "queue": "events", "protocol": 2, "stamp": false}, ...]}
//   protocol: celery-node's TASK_PROTOCOL, 2 (its default) or 1.
//   stamp: build the message with createTaskMessage and add the headers clientflow reads
//     (clientflow_published_at, argsrepr, kwargsrepr) before sending it; without it the
//     event goes out through createTask(...).applyAsync([], kwargs), celery-node's default.
// stdout (JSON): the task id of each event, in order.
const { randomUUID } = require("node:crypto");
const { createClient } = require("celery-node");
const { idsOnly, readJson } = require("./wire");

async function main() {
  const { broker, events } = await readJson(process.stdin);
  const clients = new Map();
  function clientFor(queue, protocol) {
    const key = `${queue}/${protocol}`;
    if (!clients.has(key)) {
      // The result backend is never read (clientflow stores no results), but celery-node
      // connects to one: the broker's Redis, so no AMQP server is looked for.
      const client = createClient(broker, broker, queue);
      client.conf.TASK_PROTOCOL = protocol;
      clients.set(key, client);
    }
    return clients.get(key);
  }

  const ids = [];
  for (const event of events) {
    const client = clientFor(event.queue || "celery", event.protocol || 2);
    await client.isReady();
    if (event.stamp) {
      const id = randomUUID();
      const message = client.createTaskMessage(id, event.task, [], event.kwargs);
      Object.assign(message.headers, {
        clientflow_published_at: Date.now() / 1000, // seconds, not milliseconds
        argsrepr: "()",
        kwargsrepr: idsOnly(event.kwargs),
      });
      client.sendTaskMessage(event.task, message);
      ids.push(id);
    } else {
      ids.push(client.createTask(event.task).applyAsync([], event.kwargs).taskId);
    }
  }
  // celery-node sends from a promise it does not return: let those run (each LPUSH is then
  // queued on its connection) before QUIT, which Redis answers after them.
  await new Promise((resolve) => setImmediate(resolve));
  for (const client of clients.values()) {
    await client.disconnect();
  }
  process.stdout.write(JSON.stringify(ids));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
