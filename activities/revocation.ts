import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { ProvisioningServiceClient } from 'azure-iot-provisioning-service';
import type {
  DeviceRegistrationState,
  EnrollmentGroup,
  IndividualEnrollment,
} from 'azure-iot-provisioning-service/dist/interfaces';
import type { Registry } from 'azure-iothub';
import type { AzureClients, HubClient } from './azure-clients';
import { AzureFailureTypes, azureCall, bulkErrorsOf, isNotFound, permanent } from './azure-errors';
import {
  continuationOf,
  deriveDeviceKey,
  dpsClient,
  findEnrollmentGroup,
  findGroupOf,
  findIndividualEnrollment,
  memberAttestation,
  queryItems,
  verifyMemberCertificate,
} from './dps';
import { promotionWorkflowId, revocationRequestedSignal } from '../common/messages';
import { REVOCATION_MARK, RevocationErrors, type DeviceProof, type HubProof } from '../common/revocation';

/**
 * Revocation and reinstatement, as Azure documents deprovisioning: "disenroll in DPS, then disable or delete the
 * identity in the hub registry" (Azure, "How to deprovision devices that were previously auto-provisioned").
 * - Individual enrollment: disabled, never deleted — "deleting an individual enrollment lets the device enroll again
 *   through a matching group" (same page, X.509 individual enrollments).
 * - One member of a group: a disabled individual enrollment of its own, kept ("to disallow one device of a group,
 *   create a disabled individual enrollment for it").
 * - A whole group: the group disabled, then every device of it disabled or deleted in the hubs.
 * Devices are looked for in every configured hub, not only the one DPS last assigned: promotions, hand moves and
 * restores leave devices elsewhere. Every call is safe to repeat.
 */

/** What a revocation marks: its workflow id and when, so that a reinstatement undoes exactly that. */
export interface RevocationMark {
  workflowId: string;
  at: string;
  /** Set on the disabled individual enrollment a revocation created to block one member of a group. */
  created?: boolean;
}

export interface DpsRevocation {
  registrationId: string;
  deviceId: string;
  enrollment: DeviceProof['dps']['enrollment'];
  changed: boolean;
  enrollmentGroupId?: string;
}

export interface RegistrationRef {
  registrationId: string;
  deviceId: string;
}

export interface GroupPage {
  registrations: RegistrationRef[];
  continuation?: string;
}

const BULK_DEVICES = 100;
const READ_CONCURRENCY = 8;

const statusReasonOf = (workflowId: string) => `${REVOCATION_MARK.statusReasonPrefix} (${workflowId})`.slice(0, 128);

type Tags = Record<string, unknown>;
const tagsOf = (e: { initialTwin?: { tags?: unknown } | null }) => ({ ...((e.initialTwin?.tags as Tags) ?? {}) });
const markOf = (e: { initialTwin?: { tags?: unknown } | null }) =>
  tagsOf(e)[REVOCATION_MARK.twinTag] as RevocationMark | undefined;

/** The initial twin with the revocation mark added (or removed, with `mark` undefined). */
function withMark(e: { initialTwin?: unknown }, mark: RevocationMark | undefined) {
  const twin = (e.initialTwin as { tags?: Tags; properties?: { desired?: Tags } } | undefined) ?? {};
  const tags = { ...(twin.tags ?? {}) };
  if (mark) tags[REVOCATION_MARK.twinTag] = { ...mark };
  else delete tags[REVOCATION_MARK.twinTag];
  return { ...twin, tags, properties: twin.properties ?? { desired: {} } };
}

export function revocationActivities(clients: AzureClients, temporal?: Client) {
  const dps = (): ProvisioningServiceClient => dpsClient(clients);
  const hub = (environment: string): HubClient => {
    const found = clients.hubs.get(environment);
    if (!found) throw permanent('UnknownEnvironment', `no IoT hub is configured for environment "${environment}"`);
    return found;
  };

  const activities = {
    /** The device id DPS gave the registration (its registration record, else its enrollment, else the same id). */
    async dpsDeviceOf(input: { registrationId: string }): Promise<{ deviceId: string }> {
      const client = dps();
      const registration = await registrationState(client, input.registrationId);
      if (registration?.deviceId) return { deviceId: registration.deviceId };
      const individual = await azureCall('get individual enrollment', () =>
        findIndividualEnrollment(client, input.registrationId),
      );
      return { deviceId: individual?.deviceId || input.registrationId };
    },

    /** dpsDeviceOf for many registrations. */
    async dpsDevicesOf(input: { registrationIds: string[] }): Promise<Record<string, string>> {
      const found: Record<string, string> = {};
      await forEachConcurrently(input.registrationIds, READ_CONCURRENCY, async (registrationId) => {
        found[registrationId] = (await activities.dpsDeviceOf({ registrationId })).deviceId;
      });
      return found;
    },

    /** Every configured hub: a revocation looks in all of them. */
    async listEnvironments(): Promise<Record<string, string>> {
      return Object.fromEntries([...clients.hubs].map(([environment, h]) => [environment, h.hostName]));
    },

    /**
     * Stops the running promotions of these devices without restoring access (their `revocationRequested` signal),
     * and waits, with a bound, until they have closed: a revocation must not race a promotion's rollback that
     * re-enables an identity.
     */
    async stopPromotions(input: {
      registrationIds: string[];
      revocationWorkflowId: string;
      reason: string;
      requestedBy?: string;
      waitMs: number;
    }): Promise<{ stopped: string[]; stillRunning: string[] }> {
      if (!temporal) throw permanent('TemporalClientNotConfigured', 'the worker has no Temporal client for activities');
      const client = temporal;
      const running: string[] = [];
      await forEachConcurrently(input.registrationIds, READ_CONCURRENCY, async (registrationId) => {
        const handle = client.workflow.getHandle(promotionWorkflowId(registrationId));
        try {
          await handle.signal(revocationRequestedSignal, {
            revocationWorkflowId: input.revocationWorkflowId,
            reason: input.reason,
            ...(input.requestedBy ? { requestedBy: input.requestedBy } : {}),
          });
          running.push(registrationId);
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err; // none, or closed: nothing to stop
        }
      });
      const deadline = Date.now() + input.waitMs;
      let open = running;
      while (open.length > 0 && Date.now() < deadline) {
        Context.current().heartbeat({ waitingFor: open.length });
        const states = await Promise.all(
          open.map(async (id) => ({
            id,
            running: (await client.workflow.getHandle(promotionWorkflowId(id)).describe()).status.name === 'RUNNING',
          })),
        );
        open = states.filter((s) => s.running).map((s) => s.id);
        // Context.sleep ends early when the activity is cancelled (a worker shutting down does not wait it out).
        if (open.length) await Context.current().sleep(500);
      }
      return { stopped: running.filter((id) => !open.includes(id)), stillRunning: open };
    },

    /**
     * Makes DPS refuse one device: its individual enrollment disabled (marked), or, for a member of a group, a
     * disabled individual enrollment of its own (marked; keys derived inside this activity, never returned).
     */
    async dpsRevokeDevice(input: DpsRevokeItem): Promise<DpsRevocation> {
      const client = dps();
      const decided = await decideDpsRevocation(client, input);
      if (decided.write) {
        const { enrollment } = decided.write;
        await azureCall('write individual enrollment', () => client.createOrUpdateIndividualEnrollment(enrollment));
      }
      return decided.result;
    },

    /**
     * dpsRevokeDevice for many devices: each decided as one device is, then written through DPS's bulk enrollment
     * API, 10 a call (disables under their etags, blockers created). A device's own failure (a refused request, a
     * write DPS refused) is reported for that device; the others go on.
     */
    async dpsRevokeDevices(input: {
      items: DpsRevokeItem[];
    }): Promise<
      Array<{ registrationId: string; revocation?: DpsRevocation; error?: { type: string; message: string } }>
    > {
      const client = dps();
      const decided = new Map<
        string,
        Awaited<ReturnType<typeof decideDpsRevocation>> | { error: { type: string; message: string } }
      >();
      await forEachConcurrently(input.items, READ_CONCURRENCY, async (item) => {
        try {
          decided.set(item.registrationId, await decideDpsRevocation(client, item));
        } catch (err) {
          const failure = permanentOf(err);
          if (!failure) throw err; // transient: the whole batch is retried, its reads are repeated
          decided.set(item.registrationId, { error: failure });
        }
      });
      const writes = [...decided.entries()].flatMap(([id, d]) => ('write' in d && d.write ? [{ id, ...d.write }] : []));
      const failedWrites = new Map<string, { type: string; message: string }>();
      for (const mode of ['updateIfMatchEtag', 'create'] as const) {
        const batch = writes.filter((w) => w.mode === mode);
        for (let i = 0; i < batch.length; i += DPS_BULK) {
          Context.current().heartbeat({ written: i });
          const chunk = batch.slice(i, i + DPS_BULK);
          for (const e of await bulkEnrollments(
            client,
            mode,
            chunk.map((w) => w.enrollment),
          )) {
            failedWrites.set(e.registrationId, {
              type: AzureFailureTypes.conflict,
              message: `${e.errorCode} ${e.errorStatus}`,
            });
          }
        }
      }
      return input.items.map(({ registrationId }) => {
        const d = decided.get(registrationId)!;
        if ('error' in d) return { registrationId, error: d.error };
        const failed = failedWrites.get(registrationId);
        return failed ? { registrationId, error: failed } : { registrationId, revocation: d.result };
      });
    },

    /** Disables (and marks) a whole group; already disabled counts as done. */
    async dpsRevokeGroup(input: { enrollmentGroupId: string; mark: RevocationMark }): Promise<{ changed: boolean }> {
      const client = dps();
      const group = await azureCall('get enrollment group', () => findEnrollmentGroup(client, input.enrollmentGroupId));
      if (!group) {
        throw permanent(RevocationErrors.enrollmentNotFound, `enrollment group ${input.enrollmentGroupId} not found`);
      }
      if (group.provisioningStatus === 'disabled') return { changed: false };
      await azureCall('disable enrollment group', () =>
        client.createOrUpdateEnrollmentGroup({
          ...group,
          provisioningStatus: 'disabled',
          initialTwin: withMark(group, input.mark),
        } as EnrollmentGroup),
      );
      return { changed: true };
    },

    /** One page of the devices that registered through a group (registration records outlive the devices). */
    async dpsGroupRegistrations(input: {
      enrollmentGroupId: string;
      continuation?: string;
      pageSize: number;
    }): Promise<GroupPage> {
      const query = dps().createEnrollmentGroupDeviceRegistrationStateQuery(
        { query: '*' },
        input.enrollmentGroupId,
        input.pageSize,
      );
      const page = await azureCall('query group registrations', () =>
        input.continuation ? query.next(input.continuation) : query.next(),
      );
      const registrations = queryItems<DeviceRegistrationState>(page.responseBody).map((r) => ({
        registrationId: r.registrationId,
        deviceId: r.deviceId || r.registrationId,
      }));
      return { registrations, continuation: continuationOf(page) };
    },

    /**
     * One page of the individual enrollments that stand in for members of a group — those a promotion created to
     * move one member: they keep the member registering after the group is disabled. A symmetric-key member's
     * enrollment holds the key derived from the group's; an X.509 member's certificate is issued by the group's CA.
     * Disabled ones (already blocked) are skipped.
     */
    async dpsGroupMemberEnrollments(input: {
      enrollmentGroupId: string;
      continuation?: string;
      pageSize: number;
      /** Instead of the enabled ones: the ones this revocation disabled (for its reinstatement). */
      revokedBy?: string;
    }): Promise<GroupPage> {
      const client = dps();
      const group = await azureCall('get enrollment group', () => findEnrollmentGroup(client, input.enrollmentGroupId));
      if (!group) return { registrations: [] };
      const query = client.createIndividualEnrollmentQuery({ query: '*' }, input.pageSize);
      const page = await azureCall('query individual enrollments', () =>
        input.continuation ? query.next(input.continuation) : query.next(),
      );
      const wanted = queryItems<IndividualEnrollment>(page.responseBody).filter((e) =>
        input.revokedBy
          ? e.provisioningStatus === 'disabled' && markOf(e)?.workflowId === input.revokedBy
          : e.provisioningStatus !== 'disabled',
      );
      const belongs = await memberTest(client, group);
      const members: RegistrationRef[] = [];
      for (const e of wanted) {
        if (await belongs(e))
          members.push({ registrationId: e.registrationId, deviceId: e.deviceId || e.registrationId });
      }
      return { registrations: members, continuation: continuationOf(page) };
    },

    /** Disables (and marks) the individual enrollments of these devices; already disabled counts as done. */
    async dpsDisableIndividuals(input: {
      registrationIds: string[];
      mark: RevocationMark;
    }): Promise<{ disabled: string[]; alreadyDisabled: string[]; missing: string[] }> {
      const client = dps();
      const result = { disabled: [] as string[], alreadyDisabled: [] as string[], missing: [] as string[] };
      for (const registrationId of input.registrationIds) {
        const e = await azureCall('get individual enrollment', () => findIndividualEnrollment(client, registrationId));
        if (!e) result.missing.push(registrationId);
        else if (e.provisioningStatus === 'disabled') result.alreadyDisabled.push(registrationId);
        else {
          await azureCall('disable individual enrollment', () =>
            client.createOrUpdateIndividualEnrollment({
              ...e,
              provisioningStatus: 'disabled',
              initialTwin: withMark(e, input.mark),
            } as IndividualEnrollment),
          );
          result.disabled.push(registrationId);
        }
      }
      return result;
    },

    /**
     * Whether DPS would refuse a fresh registration of this device now. DPS decides by the device's individual
     * enrollment when there is one (checked before groups), else by its group: refused when that one is disabled,
     * or when there is neither.
     */
    async dpsRegistrationRefused(input: { registrationId: string; enrollmentGroupId?: string }): Promise<{
      refused: boolean;
      individual: 'absent' | 'enabled' | 'disabled';
      group: 'absent' | 'enabled' | 'disabled';
    }> {
      const client = dps();
      const individual = await azureCall('get individual enrollment', () =>
        findIndividualEnrollment(client, input.registrationId),
      );
      // Without an individual enrollment, the group whose registration records hold the device decides.
      const groupId =
        input.enrollmentGroupId ??
        (individual
          ? undefined
          : await azureCall('search enrollment groups', () => findGroupOf(client, input.registrationId)));
      const group = groupId
        ? await azureCall('get enrollment group', () => findEnrollmentGroup(client, groupId))
        : undefined;
      const state = (e?: { provisioningStatus?: string }) =>
        !e ? 'absent' : e.provisioningStatus === 'disabled' ? 'disabled' : 'enabled';
      const deciding = individual ?? group;
      return {
        refused: !deciding || deciding.provisioningStatus === 'disabled',
        individual: state(individual),
        group: state(group),
      };
    },

    /** dpsRegistrationRefused for many devices. */
    async dpsRegistrationsRefused(input: {
      items: Array<{ registrationId: string; enrollmentGroupId?: string }>;
    }): Promise<Array<{ registrationId: string; refused: boolean; individual: string; group: string }>> {
      const results: Array<{ registrationId: string; refused: boolean; individual: string; group: string }> = [];
      await forEachConcurrently(input.items, READ_CONCURRENCY, async (item) => {
        results.push({ registrationId: item.registrationId, ...(await activities.dpsRegistrationRefused(item)) });
      });
      return input.items.map((item) => results.find((r) => r.registrationId === item.registrationId)!);
    },

    /** dpsReinstateDevice for many devices; a device's own permanent failure is reported for it. */
    async dpsReinstateDevices(input: {
      items: Array<{ registrationId: string; enrollmentGroupId?: string; revokedBy: string }>;
    }): Promise<Array<{ registrationId: string; dps?: string; error?: { type: string; message: string } }>> {
      const results = new Map<string, { dps?: string; error?: { type: string; message: string } }>();
      await forEachConcurrently(input.items, READ_CONCURRENCY, async (item) => {
        try {
          results.set(item.registrationId, { dps: (await activities.dpsReinstateDevice(item)).dps });
        } catch (err) {
          const failure = permanentOf(err);
          if (!failure) throw err;
          results.set(item.registrationId, { error: failure });
        }
      });
      return input.items.map((item) => ({ registrationId: item.registrationId, ...results.get(item.registrationId) }));
    },

    /**
     * Disables (with the revocation's status reason) or deletes these devices' identities in one hub, under their
     * etags, through the registry's bulk API (100 a call); then re-reads them and waits, with a bound, for their
     * connections to close (a disable or delete ends the device's live session). Absent identities are reported,
     * not an error. Identities already disabled are left as they are (and so is their status reason).
     */
    async hubRevokeIdentities(input: {
      environment: string;
      deviceIds: string[];
      action: 'disable' | 'delete';
      revocationWorkflowId: string;
      /** Per device, the revocation to name in its status reason (a fleet operation revokes each as its own). */
      revocationWorkflowIds?: Record<string, string>;
      disconnectTimeoutMs: number;
    }): Promise<HubProof[]> {
      const { registry, hostName } = hub(input.environment);
      const before = await readDevices(registry, input.deviceIds);
      const toChange = input.deviceIds.filter((id) => {
        const d = before.get(id);
        return d && (input.action === 'delete' || d.status !== 'disabled');
      });
      for (let i = 0; i < toChange.length; i += BULK_DEVICES) {
        const chunk = toChange.slice(i, i + BULK_DEVICES).map((id) => before.get(id)!);
        Context.current().heartbeat({ changed: i });
        if (input.action === 'delete') {
          await bulk(registry, 'delete', chunk);
        } else {
          const reasonOf = (deviceId: string) =>
            statusReasonOf(input.revocationWorkflowIds?.[deviceId] ?? input.revocationWorkflowId);
          await bulk(
            registry,
            'update',
            chunk.map((d) => ({ ...d, status: 'disabled', statusReason: reasonOf(d.deviceId) })),
          );
        }
      }
      // Proof: re-read, and give live sessions a bounded time to close.
      const deadline = Date.now() + input.disconnectTimeoutMs;
      let after = await readDevices(registry, input.deviceIds);
      while (Date.now() < deadline && [...after.values()].some((d) => d.connectionState === 'Connected')) {
        Context.current().heartbeat({ waitingForDisconnect: true });
        await Context.current().sleep(500);
        after = await readDevices(registry, input.deviceIds);
      }
      return input.deviceIds.map((deviceId) => {
        const was = before.get(deviceId);
        const now = after.get(deviceId);
        return {
          environment: input.environment,
          hubHost: hostName,
          deviceId,
          before: !was ? 'absent' : was.status === 'disabled' ? 'disabled' : 'enabled',
          action: !toChange.includes(deviceId) ? 'none' : input.action === 'delete' ? 'deleted' : 'disabled',
          after: !now ? 'absent' : now.status === 'disabled' ? 'disabled' : 'enabled',
          ...(now?.connectionState ? { connectionState: now.connectionState } : {}),
        };
      });
    },

    /** Undoes dpsRevokeDevice where that revocation did it: re-enables the enrollment it disabled, deletes its blocker. */
    async dpsReinstateDevice(input: {
      registrationId: string;
      enrollmentGroupId?: string;
      revokedBy: string;
    }): Promise<{ deviceId: string; dps: 'enabled' | 'blockerRemoved' | 'notRevokedHere' | 'noEnrollment' }> {
      const client = dps();
      const registration = await registrationState(client, input.registrationId);
      const individual = await azureCall('get individual enrollment', () =>
        findIndividualEnrollment(client, input.registrationId),
      );
      const deviceId = registration?.deviceId || individual?.deviceId || input.registrationId;
      if (!individual) return { deviceId, dps: input.enrollmentGroupId ? 'notRevokedHere' : 'noEnrollment' };
      if (individual.provisioningStatus !== 'disabled' || markOf(individual)?.workflowId !== input.revokedBy) {
        return { deviceId, dps: 'notRevokedHere' };
      }
      if (markOf(individual)?.created) {
        try {
          await client.deleteIndividualEnrollment(input.registrationId, individual.etag);
        } catch (err) {
          if (!isNotFound(err)) return azureCall('delete blocking enrollment', () => Promise.reject(err));
        }
        return { deviceId, dps: 'blockerRemoved' };
      }
      await azureCall('re-enable individual enrollment', () =>
        client.createOrUpdateIndividualEnrollment({
          ...individual,
          provisioningStatus: 'enabled',
          initialTwin: withMark(individual, undefined),
        } as IndividualEnrollment),
      );
      return { deviceId, dps: 'enabled' };
    },

    async dpsReinstateGroup(input: {
      enrollmentGroupId: string;
      revokedBy: string;
    }): Promise<{ dps: 'groupEnabled' | 'notRevokedHere' }> {
      const client = dps();
      const group = await azureCall('get enrollment group', () => findEnrollmentGroup(client, input.enrollmentGroupId));
      if (!group) {
        throw permanent(RevocationErrors.enrollmentNotFound, `enrollment group ${input.enrollmentGroupId} not found`);
      }
      if (group.provisioningStatus !== 'disabled' || markOf(group)?.workflowId !== input.revokedBy) {
        return { dps: 'notRevokedHere' };
      }
      await azureCall('re-enable enrollment group', () =>
        client.createOrUpdateEnrollmentGroup({
          ...group,
          provisioningStatus: 'enabled',
          initialTwin: withMark(group, undefined),
        } as EnrollmentGroup),
      );
      return { dps: 'groupEnabled' };
    },

    /** Re-enables the individual enrollments this revocation disabled (its mark) among these; others stay as they are. */
    async dpsEnableIndividuals(input: {
      registrationIds: string[];
      revokedBy: string;
    }): Promise<{ enabled: string[] }> {
      const client = dps();
      const enabled: string[] = [];
      for (const registrationId of input.registrationIds) {
        const e = await azureCall('get individual enrollment', () => findIndividualEnrollment(client, registrationId));
        if (!e || e.provisioningStatus !== 'disabled' || markOf(e)?.workflowId !== input.revokedBy) continue;
        await azureCall('re-enable individual enrollment', () =>
          client.createOrUpdateIndividualEnrollment({
            ...e,
            provisioningStatus: 'enabled',
            initialTwin: withMark(e, undefined),
          } as IndividualEnrollment),
        );
        enabled.push(registrationId);
      }
      return { enabled };
    },

    /**
     * Re-enables the identities a revocation disabled (its status reason) in one hub; identities disabled for any
     * other reason, enabled ones and absent ones are left as they are.
     */
    async hubReinstateIdentities(input: {
      environment: string;
      deviceIds: string[];
      /** Only identities disabled by these revocations are re-enabled. */
      revokedBy: string[];
    }): Promise<
      Array<{ deviceId: string; environment: string; identity: 'reenabled' | 'absent' | 'leftDisabled' | 'enabled' }>
    > {
      const { registry } = hub(input.environment);
      const current = await readDevices(registry, input.deviceIds);
      const ours = input.deviceIds.filter((id) => {
        const d = current.get(id);
        return d?.status === 'disabled' && input.revokedBy.some((id) => d.statusReason === statusReasonOf(id));
      });
      for (let i = 0; i < ours.length; i += BULK_DEVICES) {
        Context.current().heartbeat({ reenabled: i });
        await bulk(
          registry,
          'update',
          ours.slice(i, i + BULK_DEVICES).map((id) => ({ ...current.get(id)!, status: 'enabled', statusReason: null })),
        );
      }
      return input.deviceIds.map((deviceId) => {
        const d = current.get(deviceId);
        const identity = !d
          ? 'absent'
          : ours.includes(deviceId)
            ? 'reenabled'
            : d.status === 'disabled'
              ? 'leftDisabled'
              : 'enabled';
        return { deviceId, environment: input.environment, identity };
      });
    },
  };
  return activities;
}

// ---- helpers ----

export interface DpsRevokeItem {
  registrationId: string;
  enrollmentGroupId?: string;
  deviceCertificate?: string;
  mark: RevocationMark;
}

/** DPS's bulk enrollment API takes up to 10 enrollments a call. */
const DPS_BULK = 10;

/**
 * What revoking one device in DPS takes: reads its registration, individual enrollment and group, and answers the
 * result together with the one enrollment write that makes it so (none when DPS already refuses the device).
 */
async function decideDpsRevocation(
  client: ProvisioningServiceClient,
  input: DpsRevokeItem,
): Promise<{
  result: DpsRevocation;
  write?: { mode: 'updateIfMatchEtag' | 'create'; enrollment: IndividualEnrollment };
}> {
  const registration = await registrationState(client, input.registrationId);
  const individual = await azureCall('get individual enrollment', () =>
    findIndividualEnrollment(client, input.registrationId),
  );
  const deviceId = registration?.deviceId || individual?.deviceId || input.registrationId;
  const result = (enrollment: DpsRevocation['enrollment'], changed: boolean, enrollmentGroupId?: string) => ({
    registrationId: input.registrationId,
    deviceId,
    enrollment,
    changed,
    ...(enrollmentGroupId ? { enrollmentGroupId } : {}),
  });
  if (individual) {
    if (individual.provisioningStatus === 'disabled') {
      return {
        result: result(markOf(individual)?.created ? 'blockedByDisabledIndividual' : 'individualDisabled', false),
      };
    }
    return {
      result: result('individualDisabled', true),
      write: {
        mode: 'updateIfMatchEtag',
        enrollment: {
          ...individual,
          provisioningStatus: 'disabled',
          initialTwin: withMark(individual, input.mark),
        } as IndividualEnrollment,
      },
    };
  }
  const groupId =
    input.enrollmentGroupId ??
    (await azureCall('search enrollment groups', () => findGroupOf(client, input.registrationId)));
  const group = groupId
    ? await azureCall('get enrollment group', () => findEnrollmentGroup(client, groupId))
    : undefined;
  // No enrollment lets it register: DPS refuses it. Its hub identities are what is left to revoke.
  if (!group) return { result: result('noEnrollment', false) };
  if (group.attestation?.type === 'x509') {
    if (!input.deviceCertificate) {
      throw permanent(
        RevocationErrors.deviceCertificateRequired,
        'blocking one device of an X.509 enrollment group needs its certificate chain (deviceCertificate)',
      );
    }
    await verifyMemberCertificate(client, {
      enrollmentGroupId: group.enrollmentGroupId,
      registrationId: input.registrationId,
      deviceCertificate: input.deviceCertificate,
    });
  }
  const attestation = await memberAttestation(client, group, {
    enrollment: { registrationId: input.registrationId },
    deviceCertificate: input.deviceCertificate,
  });
  return {
    result: result('blockedByDisabledIndividual', true, group.enrollmentGroupId),
    write: {
      mode: 'create',
      enrollment: {
        registrationId: input.registrationId,
        deviceId,
        attestation,
        iotHubs: group.iotHubs ?? [],
        allocationPolicy: group.allocationPolicy,
        provisioningStatus: 'disabled',
        initialTwin: withMark({}, { ...input.mark, created: true }),
      } as IndividualEnrollment,
    },
  };
}

/**
 * One DPS bulk enrollment call (the SDK's callback form: its promise form never settles, azure-wire.md). Answers the
 * enrollments DPS refused; a refusal because the enrollment changed or already exists since it was read fails the
 * attempt (retryable: the next attempt reads again and finds it done or decides anew).
 */
async function bulkEnrollments(
  client: ProvisioningServiceClient,
  mode: 'updateIfMatchEtag' | 'create',
  enrollments: IndividualEnrollment[],
): Promise<Array<{ registrationId: string; errorCode?: number | string; errorStatus?: string }>> {
  const result = await azureCall(
    `bulk ${mode} enrollments`,
    () =>
      new Promise<{ errors?: Array<{ registrationId: string; errorCode?: number | string; errorStatus?: string }> }>(
        (resolve, reject) =>
          client.runBulkEnrollmentOperation({ mode, enrollments } as never, (err, answer) =>
            err ? reject(err) : resolve((answer ?? {}) as never),
          ),
      ),
  );
  const errors = result.errors ?? [];
  const stale = errors.filter((e) => /PreconditionFailed|Conflict|412|409/.test(`${e.errorCode} ${e.errorStatus}`));
  if (stale.length)
    throw new Error(`bulk ${mode}: ${stale.length} enrollment(s) changed meanwhile (${stale[0].registrationId})`);
  return errors;
}

/** The named type of a permanent (non-retryable) failure, or undefined for one worth retrying. */
function permanentOf(err: unknown): { type: string; message: string } | undefined {
  const failure = err as { nonRetryable?: boolean; type?: string; message?: string };
  return failure?.nonRetryable ? { type: failure.type ?? 'Error', message: failure.message ?? String(err) } : undefined;
}

type RawDevice = {
  deviceId: string;
  etag?: string;
  status?: string;
  statusReason?: string | null;
  connectionState?: string;
  authentication?: unknown;
  capabilities?: unknown;
  deviceScope?: string;
};

async function registrationState(dps: ProvisioningServiceClient, registrationId: string) {
  try {
    return (await dps.getDeviceRegistrationState(registrationId)).responseBody;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    return azureCall('get registration state', () => Promise.reject(err));
  }
}

/** Reads the identities (with their keys, which never leave the activity), a few at a time. */
async function readDevices(registry: Registry, deviceIds: string[]): Promise<Map<string, RawDevice>> {
  const found = new Map<string, RawDevice>();
  await forEachConcurrently(deviceIds, READ_CONCURRENCY, async (deviceId) => {
    try {
      found.set(deviceId, (await registry.get(deviceId)).responseBody as unknown as RawDevice);
    } catch (err) {
      if (isNotFound(err)) return;
      await azureCall(`get device ${deviceId}`, () => Promise.reject(err));
    }
  });
  return found;
}

/**
 * One bulk registry call under etags (UpdateIfMatchETag / DeleteIfMatchETag). A device that is gone counts as
 * done for a delete; a device changed since it was read fails the attempt (retryable: the next attempt re-reads).
 */
async function bulk(
  registry: Registry,
  mode: 'update' | 'delete',
  devices: Array<RawDevice & Record<string, unknown>>,
) {
  let errors: Array<{ deviceId?: string; errorCode?: string; errorStatus?: string }> = [];
  try {
    const { responseBody } =
      mode === 'update'
        ? await registry.updateDevices(devices as never, false)
        : await registry.removeDevices(devices as never, false);
    errors = (responseBody.errors ?? []) as unknown as typeof errors;
  } catch (err) {
    const parsed = bulkErrorsOf(err);
    if (!parsed) return azureCall(`bulk ${mode}`, () => Promise.reject(err));
    errors = parsed;
  }
  const real = errors.filter((e) => !(mode === 'delete' && e.errorCode === 'DeviceNotFound'));
  if (real.length === 0) return;
  if (real.every((e) => e.errorCode === 'PreconditionFailed' || e.errorCode === 'DeviceNotFound')) {
    // Changed (or removed) by someone since it was read: retried, the next attempt reads them again.
    throw new Error(`bulk ${mode}: ${real.length} device(s) changed meanwhile (${real[0].deviceId})`);
  }
  throw permanent(
    AzureFailureTypes.badRequest,
    `bulk ${mode}: ${real.map((e) => `${e.deviceId} ${e.errorCode}`).join(', ')}`,
  );
}

/** Whether an individual enrollment stands in for a member of `group` (see dpsGroupMemberEnrollments). */
async function memberTest(dps: ProvisioningServiceClient, group: EnrollmentGroup) {
  if (group.attestation?.type === 'symmetricKey') {
    const groupKeys = (
      await azureCall('get group attestation mechanism', () =>
        dps.getEnrollmentGroupAttestationMechanism(group.enrollmentGroupId),
      )
    ).responseBody.symmetricKey;
    return async (e: IndividualEnrollment) => {
      if (e.attestation?.type !== 'symmetricKey' || !groupKeys?.primaryKey) return false;
      const keys = (
        await azureCall('get attestation mechanism', () =>
          dps.getIndividualEnrollmentAttestationMechanism(e.registrationId),
        )
      ).responseBody.symmetricKey;
      return keys?.primaryKey === deriveDeviceKey(groupKeys.primaryKey, e.registrationId);
    };
  }
  if (group.attestation?.type === 'x509') {
    const signing = group.attestation.x509?.signingCertificates as
      Record<string, { info?: { subjectName?: string } } | undefined> | undefined;
    const caSubjects = Object.values(signing ?? {})
      .map((c) => c?.info?.subjectName)
      .filter((s): s is string => !!s);
    return async (e: IndividualEnrollment) => {
      const client = e.attestation?.x509?.clientCertificates as
        Record<string, { info?: { issuerName?: string } } | undefined> | undefined;
      const issuers = Object.values(client ?? {}).map((c) => c?.info?.issuerName);
      return issuers.some((issuer) => issuer && caSubjects.includes(issuer));
    };
  }
  return async () => false;
}

async function forEachConcurrently<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>) {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
}
