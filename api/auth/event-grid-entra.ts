import type { Config } from '../../common/config';
import { claimValues, jwtVerifier, stringClaim, TokenRejected, type JwtCheck } from './jwt';

/**
 * Event Grid's Microsoft Entra–secured webhook delivery ("Deliver events to Microsoft Entra protected endpoints"):
 * each delivery carries `Authorization: Bearer <JWT>` issued by the tenant for the webhook's application. Accepted
 * when it verifies against the tenant's keys, names the application as its audience, was issued to Event Grid itself
 * (its client id in `appid`/`azp`) and holds the app role Event Grid was assigned.
 */
export interface EventGridEntraOptions extends JwtCheck {
  /** Client ids of the sender: Event Grid's first-party application. */
  appIds: string[];
  /** The app role the webhook application assigns to Event Grid. */
  role: string;
}

/** Microsoft.EventGrid's application id, the same in every tenant. */
export const EVENT_GRID_APP_ID = '4962773b-9cdb-44cf-a8bf-237846a00ab7';
/** The role name Microsoft's set-up script creates on the webhook application and assigns to Event Grid. */
export const EVENT_GRID_SUBSCRIBER_ROLE = 'AzureEventGridSecureWebhookSubscriber';

/** The options for a tenant of Azure's public cloud (v1 and v2 token issuers; one key set for both). */
export function eventGridEntraOptions(config: Config): EventGridEntraOptions | undefined {
  const tenant = config.EVENT_GRID_ENTRA_TENANT_ID;
  if (!tenant) return undefined;
  return {
    issuers: [`https://sts.windows.net/${tenant}/`, `https://login.microsoftonline.com/${tenant}/v2.0`],
    audiences: config.EVENT_GRID_ENTRA_AUDIENCE!,
    jwksUri: config.EVENT_GRID_ENTRA_JWKS_URI ?? `https://login.microsoftonline.com/${tenant}/discovery/v2.0/keys`,
    appIds: [EVENT_GRID_APP_ID],
    role: EVENT_GRID_SUBSCRIBER_ROLE,
  };
}

/** Resolves when the token is an Event Grid delivery token for this webhook; rejects with TokenRejected otherwise. */
export function eventGridTokenCheck(options: EventGridEntraOptions): (token: string) => Promise<void> {
  const verify = jwtVerifier(options);
  return async (token) => {
    const claims = await verify(token);
    const client = stringClaim(claims, 'appid') ?? stringClaim(claims, 'azp');
    if (!client || !options.appIds.includes(client)) {
      throw new TokenRejected('the token was not issued to Event Grid');
    }
    if (!claimValues(claims, 'roles').includes(options.role)) {
      throw new TokenRejected(`the token lacks the ${options.role} role`);
    }
  };
}
