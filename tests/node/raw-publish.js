"use strict";
// Publishes clientflow events as Celery message protocol 2 built by hand and pushed straight
// into Redis: no Celery library, only a Redis client. docs/publishing.md explains each field.
//
// stdin (JSON): {"broker": "redis://host:port/db", "events": [{"task": "clients.add",
//   "kwargs": {...}, "queue": "events", "args": []}, ...]}
//   args: positional arguments, only ever non-empty to show that they are refused.
// stdout (JSON): the task id of each event, in order.
const os = require("node:os");
const Redis = require("ioredis");
const { taskMessage, readJson } = require("./wire");

async function main() {
  const { broker, events } = await readJson(process.stdin);
  const redis = new Redis(broker);
  const origin = `${process.pid}@${os.hostname()}`;
  const ids = [];
  try {
    for (const event of events) {
      const { id, queue, entry } = taskMessage({ ...event, origin });
      // The worker pops from the right end: LPUSH keeps the queue first in, first out.
      await redis.lpush(queue, entry);
      ids.push(id);
    }
  } finally {
    await redis.quit();
  }
  process.stdout.write(JSON.stringify(ids));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
