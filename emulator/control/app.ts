/**
 * Control API (plain HTTP on loopback, JSON): create hubs and DPS links, inspect every object, reset, set quotas
 * and faults, mint test certificates. Separate from the Azure surfaces; nothing here exists on Azure.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { DPS_WRITE_OPERATIONS, HUB_WRITE_OPERATIONS } from '../counters';
import { configureDps, dpsSettings } from '../dps/runtime';
import { linkHubToDps, unlinkHubFromDps } from '../dps/linked-hubs';
import { AzureError } from '../hub/errors';
import { createHub, deviceToWire, twinToWire } from '../hub/registry';
import { addFaultRule, removeFaultRule, type FaultRuleInput } from '../limits/decide';
import { mintCertificate, type EmulatorPki } from '../security/certs';
import { createLimitsState, policyConnectionString, type EmulatorState, type HubState } from '../state';
import { eventGridRouter } from './eventgrid-routes';
import { mqttControlRouter } from './mqtt-routes';
import { resetEmulator } from './reset';
import { requireControlToken } from './token';

export interface ControlContext {
  state: EmulatorState;
  pki: EmulatorPki;
  /** Every route but /health requires it as a bearer token (emulator/control/token.ts). */
  token: string;
}

class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const hubTier = z.enum(['F1', 'B1', 'B2', 'B3', 'S1', 'S2', 'S3']);

const createHubBody = z.object({
  name: z.string().min(1),
  hostName: z.string().optional(),
  tier: hubTier.optional(),
  units: z.number().int().min(1).max(200).optional(),
  linkToDps: z.boolean().default(true),
  allocationWeight: z.number().int().min(0).optional(),
  applyAllocationPolicy: z.boolean().optional(),
});

const updateHubBody = z.object({ tier: hubTier.optional(), units: z.number().int().min(1).max(200).optional() });

const linkBody = z.object({
  hub: z.string().min(1),
  allocationWeight: z.number().int().min(0).optional(),
  applyAllocationPolicy: z.boolean().optional(),
  location: z.string().optional(),
});

const quotaClass = z.enum([
  'registry',
  'query',
  'twinRead',
  'twinUpdate',
  'connection',
  'deviceToCloud',
  'cloudToDeviceReceive',
  'dpsOperation',
  'dpsRegistration',
  'dpsStatusPoll',
]);

const quotasBody = z.object({
  enabled: z.boolean().optional(),
  scale: z.number().positive().optional(),
  overrides: z.partialRecord(quotaClass, z.number().positive()).optional(),
});

const faultsBody = z.object({
  errorRate: z.number().min(0).max(1).optional(),
  errorStatus: z.number().int().min(400).max(599).optional(),
  latencyMs: z.number().int().min(0).max(120_000).optional(),
});

const countersQuery = z.strictObject({
  surface: z.enum(['hub', 'dps']).optional(),
  hub: z.string().min(1).optional(),
  operation: z.enum([...HUB_WRITE_OPERATIONS, ...DPS_WRITE_OPERATIONS]).optional(),
  id: z.string().min(1).optional(),
});

const dpsSettingsBody = z.strictObject({ retryAfterSeconds: z.number().int().min(0).max(300) });

const pemPair = z.object({ certPem: z.string(), keyPem: z.string(), chainPem: z.string().optional() });

const certBody = z.object({
  commonName: z.string().min(1),
  issuer: pemPair.optional(),
  isCa: z.boolean().optional(),
  validDays: z.number().int().min(1).optional(),
  notBefore: z.iso.datetime().optional(),
  notAfter: z.iso.datetime().optional(),
});

function hubByName(state: EmulatorState, name: string): HubState {
  const hub = state.hubs.get(name);
  if (!hub) throw new ControlError(404, `No hub named ${name}`);
  return hub;
}

function hubView(state: EmulatorState, hub: HubState) {
  return {
    name: hub.name,
    hostName: hub.hostName,
    tier: hub.tier,
    units: hub.units,
    deviceCount: hub.devices.size,
    linkedToDps: state.dps.linkedHubs.some((l) => l.hostName === hub.hostName),
    policies: hub.policies.map((p) => ({
      keyName: p.keyName,
      rights: p.rights,
      connectionString: policyConnectionString(hub.hostName, p),
    })),
  };
}

function dpsView(state: EmulatorState) {
  const { dps } = state;
  return {
    name: dps.name,
    hostName: dps.hostName,
    idScope: dps.idScope,
    linkedHubs: dps.linkedHubs,
    enrollmentCount: dps.enrollments.size,
    enrollmentGroupCount: dps.enrollmentGroups.size,
    registrationCount: dps.registrations.size,
    policies: dps.policies.map((p) => ({
      keyName: p.keyName,
      rights: p.rights,
      connectionString: policyConnectionString(dps.hostName, p),
    })),
  };
}

function one<T>(map: Map<string, T>, id: string, what: string): T {
  const value = map.get(id);
  if (value === undefined) throw new ControlError(404, `No ${what} ${id}`);
  return value;
}

export function controlApp(ctx: ControlContext): express.Express {
  const { state } = ctx;
  const app = express();
  app.disable('x-powered-by');
  app.use(requireControlToken(ctx.token));
  app.use(express.json({ limit: '1mb' }));

  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });

  app.get('/ca', (_req, res) => {
    res.type('application/x-pem-file').send(ctx.pki.ca.certPem);
  });

  app.get('/hubs', (_req, res) => {
    res.json([...state.hubs.values()].map((hub) => hubView(state, hub)));
  });

  app.post('/hubs', (req, res) => {
    const body = createHubBody.parse(req.body);
    let hub: HubState;
    try {
      hub = createHub(state, body);
    } catch (err) {
      if (err instanceof AzureError) throw new ControlError(err.status, err.message);
      throw err;
    }
    if (body.linkToDps) linkHubToDps(state, hub, body);
    res.status(201).json(hubView(state, hub));
  });

  app.get('/hubs/:name', (req, res) => {
    res.json(hubView(state, hubByName(state, req.params.name)));
  });

  app.patch('/hubs/:name', (req, res) => {
    const hub = hubByName(state, req.params.name);
    Object.assign(hub, updateHubBody.parse(req.body));
    res.json(hubView(state, hub));
  });

  app.get('/hubs/:name/devices', (req, res) => {
    res.json([...hubByName(state, req.params.name).devices.values()].map(deviceToWire));
  });

  app.get('/hubs/:name/devices/:id', (req, res) => {
    const device = one(hubByName(state, req.params.name).devices, req.params.id, 'device');
    res.json({ ...deviceToWire(device), twin: twinToWire(device) });
  });

  app.get('/dps', (_req, res) => {
    res.json(dpsView(state));
  });

  app.get('/dps/settings', (_req, res) => {
    res.json(dpsSettings(state.dps));
  });

  app.put('/dps/settings', (req, res) => {
    configureDps(state.dps, dpsSettingsBody.parse(req.body));
    res.json(dpsSettings(state.dps));
  });

  app.post('/dps/linked-hubs', (req, res) => {
    const body = linkBody.parse(req.body);
    linkHubToDps(state, hubByName(state, body.hub), body);
    res.status(201).json(state.dps.linkedHubs);
  });

  app.delete('/dps/linked-hubs/:hub', (req, res) => {
    const hub = hubByName(state, req.params.hub);
    if (!unlinkHubFromDps(state, hub.hostName)) throw new ControlError(404, `Hub ${hub.name} is not linked`);
    res.status(204).end();
  });

  app.get('/dps/enrollments', (_req, res) => {
    res.json([...state.dps.enrollments.values()]);
  });
  app.get('/dps/enrollments/:id', (req, res) => {
    res.json(one(state.dps.enrollments, req.params.id, 'enrollment'));
  });
  app.get('/dps/enrollment-groups', (_req, res) => {
    res.json([...state.dps.enrollmentGroups.values()]);
  });
  app.get('/dps/enrollment-groups/:id', (req, res) => {
    res.json(one(state.dps.enrollmentGroups, req.params.id, 'enrollment group'));
  });
  app.get('/dps/registrations', (_req, res) => {
    res.json([...state.dps.registrations.values()]);
  });
  app.get('/dps/registrations/:id', (req, res) => {
    res.json(one(state.dps.registrations, req.params.id, 'registration'));
  });

  app.post('/reset', async (_req, res) => {
    await resetEmulator(state);
    res.status(204).end();
  });

  app.get('/quotas', (_req, res) => {
    res.json(state.limits.quotas);
  });
  app.put('/quotas', (req, res) => {
    const body = quotasBody.parse(req.body);
    Object.assign(state.limits.quotas, body);
    // New settings start from full buckets.
    state.limits.buckets.clear();
    res.json(state.limits.quotas);
  });

  app.get('/faults', (_req, res) => {
    res.json(state.limits.faults);
  });
  app.put('/faults', (req, res) => {
    Object.assign(state.limits.faults, faultsBody.parse(req.body));
    res.json(state.limits.faults);
  });
  app.post('/faults/rules', (req, res) => {
    res.status(201).json(addFaultRule(state.limits, req.body as FaultRuleInput));
  });
  app.delete('/faults/rules/:id', (req, res) => {
    if (!removeFaultRule(state.limits, req.params.id)) throw new ControlError(404, `No fault rule ${req.params.id}`);
    res.status(204).end();
  });
  app.delete('/faults', (_req, res) => {
    state.limits.faults = createLimitsState().faults;
    res.status(204).end();
  });

  // Write counters (emulator/counters.ts): `GET /counters?surface=&hub=&operation=&id=` answers the total and each
  // matching counter; `DELETE /counters` sets them back to zero.
  app.get('/counters', (req, res) => {
    const filter = countersQuery.parse(req.query);
    res.json({ total: state.counters.get(filter), counters: state.counters.list(filter) });
  });
  app.delete('/counters', (_req, res) => {
    state.counters.reset();
    res.status(204).end();
  });

  app.post('/certs', (req, res) => {
    const body = certBody.parse(req.body);
    res.status(201).json(
      mintCertificate({
        ...body,
        notBefore: body.notBefore ? new Date(body.notBefore) : undefined,
        notAfter: body.notAfter ? new Date(body.notAfter) : undefined,
      }),
    );
  });

  app.use('/eventgrid', eventGridRouter(state));
  app.use('/mqtt', mqttControlRouter(state));

  app.use((req: Request) => {
    throw new ControlError(404, `No control route ${req.method} ${req.path}`);
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof z.ZodError) {
      res.status(400).json({ error: 'invalid request', issues: err.issues });
    } else if (err instanceof ControlError) {
      res.status(err.status).json({ error: err.message });
    } else if ((err as { type?: string }).type === 'entity.parse.failed') {
      res.status(400).json({ error: 'invalid JSON' });
    } else {
      res.status(500).json({ error: err instanceof Error ? err.message : String(err) });
    }
  });
  return app;
}
