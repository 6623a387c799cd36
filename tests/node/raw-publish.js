"use strict";
// Publishes clientflow events as Celery message protocol 2 built by hand: no Celery library,
// only a client of the broker. On Redis the entry is pushed straight onto the queue's list; on
// RabbitMQ it is one AMQP message on the default exchange, routed to the queue, confirmed by
// the broker. docs/publishing.md explains each field.
//
// stdin (JSON): {"broker": "redis://host:port/db" | "amqp://user:pass@host:port/vhost",
//   "events": [{"task": "clients.add", "kwargs": {...}, "queue": "events", "args": []}, ...]}
//   args: positional arguments, only ever non-empty to show that they are refused.
// stdout (JSON): the task id of each event, in order.
const os = require("node:os");
const amqplib = require("amqplib");
const Redis = require("ioredis");
const { taskMessage, redisEntry, amqpOptions, readJson } = require("./wire");

async function toRedis(broker, messages) {
  const redis = new Redis(broker);
  try {
    for (const message of messages) {
      // The worker pops from the right end: LPUSH keeps the queue first in, first out.
      await redis.lpush(message.queue, redisEntry(message));
    }
  } finally {
    await redis.quit();
  }
}

async function toRabbitMQ(broker, messages) {
  const connection = await amqplib.connect(broker);
  try {
    // Publisher confirms: an event is the broker's once confirmed. Nothing is declared: the
    // workers declare their queues (quorum queues, which refuse a declaration with other
    // arguments), and a queue that does not exist yet would drop the message.
    const channel = await connection.createConfirmChannel();
    // mandatory: a message no queue takes comes back, instead of being confirmed and dropped.
    const returned = [];
    channel.on("return", (message) => returned.push(message.properties.correlationId));
    for (const message of messages) {
      const options = { ...amqpOptions(message), mandatory: true };
      channel.publish("", message.queue, Buffer.from(message.body, "utf8"), options);
    }
    await channel.waitForConfirms();
    if (returned.length) {
      throw new Error(`no queue took ${returned.join(", ")}: start a worker first`);
    }
  } finally {
    await connection.close();
  }
}

async function main() {
  const { broker, events } = await readJson(process.stdin);
  const origin = `${process.pid}@${os.hostname()}`;
  const messages = events.map((event) => taskMessage({ ...event, origin }));
  const send = broker.startsWith("amqp") ? toRabbitMQ : toRedis;
  await send(broker, messages);
  process.stdout.write(JSON.stringify(messages.map((message) => message.id)));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
