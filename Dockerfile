# syntax=docker/dockerfile:1
# The production image: the compiled build (`npm run build`: tsc output and the prebuilt workflow bundle) run by
# node as the unprivileged `node` user. One image for the worker, the API, the emulator and the Temporal setup
# command; docker-compose.yml picks the command. Nothing is installed when a container starts.
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts/setup-temporal.js scripts/
# The postinstall fetches a Temporal CLI for the development server; TEMPORAL_CLI_PATH makes it skip that.
RUN TEMPORAL_CLI_PATH=unused npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.ts scripts/temporal-setup.ts scripts/
COPY workflows workflows
COPY activities activities
COPY common common
COPY worker worker
COPY api api
COPY emulator emulator
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
# The emulator keeps its CA, state and client settings here; a named volume mounted on it starts owned by node.
RUN mkdir /data && chown node:node /data
USER node
EXPOSE 3000
CMD ["node", "dist/api/main.js"]
