"use strict";
// A Celery protocol 2 task message, as clientflow's workers read it (docs/publishing.md): in
// the envelope kombu's Redis transport keeps in a queue list, or as one AMQP message.
const { randomUUID } = require("node:crypto");

// What worker logs and task events (Flower) show instead of the payload: ids, no names.
function idsOnly(kwargs) {
  const shown = Object.entries(kwargs).filter(
    ([name]) => name === "event_id" || name.endsWith("_id"),
  );
  return `{${shown.map(([name, value]) => `'${name}': ${JSON.stringify(value)}`).join(", ")}}`;
}

function taskMessage({ task, kwargs, queue = "events", args = [], origin = "node" }) {
  const id = randomUUID();
  // [args, kwargs, embed]: clientflow's events take keyword arguments only, and no workflow.
  const body = [args, kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }];
  const headers = {
    lang: "js",
    task,
    id,
    root_id: id,
    parent_id: null,
    group: null,
    retries: 0,
    eta: null,
    expires: null,
    timelimit: [null, null],
    argsrepr: "()",
    kwargsrepr: idsOnly(kwargs),
    origin,
    // Seconds since the epoch (a float, like Python's time.time()): ops read a message's age
    // from it.
    clientflow_published_at: Date.now() / 1000,
  };
  return { id, queue, headers, body: JSON.stringify(body) };
}

// The entry a Redis publisher LPUSHes onto the queue's list.
function redisEntry({ id, queue, headers, body }) {
  const properties = {
    correlation_id: id,
    reply_to: "",
    delivery_mode: 2,
    // The default exchange: the routing key names the queue.
    delivery_info: { exchange: "", routing_key: queue },
    priority: 0,
    body_encoding: "base64",
    // The transport's own bookkeeping key for the message while a worker holds it.
    delivery_tag: randomUUID(),
  };
  return JSON.stringify({
    body: Buffer.from(body, "utf8").toString("base64"),
    "content-encoding": "utf-8",
    "content-type": "application/json",
    headers,
    properties,
  });
}

// The options of an AMQP publish (amqplib's names): no envelope, the broker keeps the
// delivery's bookkeeping; persistent, so it survives a broker restart.
function amqpOptions({ id, headers }) {
  return {
    contentType: "application/json",
    contentEncoding: "utf-8",
    headers,
    deliveryMode: 2,
    correlationId: id,
    replyTo: "",
    priority: 0,
  };
}

async function readJson(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

module.exports = { idsOnly, taskMessage, redisEntry, amqpOptions, readJson };
