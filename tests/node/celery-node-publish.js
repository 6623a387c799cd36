"use strict";
// Publishes clientflow events with celery-node, as a Node.js upstream system would.
//
// stdin (JSON): {"broker": "redis://host:port/db" | "amqp://user:pass@host:port/vhost", "events": [{"task": "clients.add",
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
      // connects to one: the broker itself, so no other server is looked for.
      const client = createClient(broker, broker, queue);
      client.conf.TASK_PROTOCOL = protocol;
      const flush = broker.startsWith("amqp") ? onRabbitMQ(client) : onRedis;
      clients.set(key, { client, flush });
    }
    return clients.get(key);
  }

  const ids = [];
  for (const event of events) {
    const { client } = clientFor(event.queue || "celery", event.protocol || 2);
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
  for (const { client, flush } of clients.values()) {
    await flush();
    await client.disconnect();
  }
  process.stdout.write(JSON.stringify(ids));
}

// celery-node sends from a promise it does not return: let those run (each LPUSH is then
// queued on its connection) before QUIT, which Redis answers after them.
async function onRedis() {
  await new Promise((resolve) => setImmediate(resolve));
}

// RabbitMQ. celery-node's AMQP broker asserts every queue it publishes to with no arguments,
// that is as a classic queue: RabbitMQ refuses that for the workers' quorum queues
// (PRECONDITION_FAILED - inequivalent arg 'x-queue-type') and closes the channel, and where
// the queue does not exist yet it creates a classic one that the workers then cannot declare.
// So its channel is swapped for a confirm channel whose assertQueue only checks that the
// queue is there (a passive declare); the messages are still celery-node's, sent by its own
// publish. Returns what to await before disconnecting: every publish made, then confirmed.
function onRabbitMQ(client) {
  const broker = client.broker;
  broker.channel = broker.connect.then(async (connection) => {
    const channel = await connection.createConfirmChannel();
    channel.assertQueue = (queue) => channel.checkQueue(queue);
    return channel;
  });
  // sendTaskMessage publishes once isReady() resolves and returns neither promise: both are
  // kept here, so that the last publish is known to have been made.
  const made = [];
  const keep = (call) => (...args) => {
    const promise = call(...args);
    made.push(promise);
    return promise;
  };
  client.isReady = keep(client.isReady.bind(client));
  broker.publish = keep(broker.publish.bind(broker));
  return async () => {
    while (made.length) {
      await Promise.all(made.splice(0));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await (await broker.channel).waitForConfirms();
  };
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
