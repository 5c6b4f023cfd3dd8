/** A minimal Event Grid webhook for tests: answers the validation handshake and records every notification. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EventGridEvent } from '../../emulator/eventgrid/event-grid';

export class WebhookSubscriber {
  readonly notifications: EventGridEvent[] = [];
  /** Headers of each notification request (one event per request). */
  readonly headers: http.IncomingHttpHeaders[] = [];
  private readonly server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const events = JSON.parse(body || '[]') as EventGridEvent[];
      if (req.headers['aeg-event-type'] === 'SubscriptionValidation') {
        const { validationCode } = events[0].data as { validationCode: string };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ validationResponse: validationCode }));
        return;
      }
      this.notifications.push(...events);
      this.headers.push(...events.map(() => req.headers));
      res.writeHead(200).end();
    });
  });

  /** Starts listening; resolves with the endpoint URL. */
  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/events`;
  }

  /** Waits until a notification matches. */
  async until(match: (e: EventGridEvent) => boolean, timeoutMs = 10_000): Promise<EventGridEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.notifications.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error('the webhook did not receive the expected event in time');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
