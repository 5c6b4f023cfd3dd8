import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';

/** Each route file registers its paths here, beside the route; /openapi.json serves the generated document. */
export const registry = new OpenAPIRegistry();

export function openApiDocument() {
  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'iot-lifecycle', version: '0.1.0', description: 'Azure IoT device lifecycle operations' },
  });
}
