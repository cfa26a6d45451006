// The peer in benchmarks/as_throughput.py: node oidc-provider configured like authgate's benchmark server:
// client_credentials and open dynamic registration, ES256-signed JWT access tokens for one resource, token
// introspection, its default in-memory adapter. Usage: node oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET [WORKERS]
// With WORKERS > 1, node:cluster runs that many provider processes on the one port (each with its own memory:
// the benchmark's token requests use the static client every worker knows).
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, workersArg] = process.argv.slice(2);
const workers = Number(workersArg || 1);
if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  cluster.on('exit', () => process.exit(1));
} else {
  serve();
}

function serve() {
  const issuer = `http://127.0.0.1:${port}`;
  const resource = 'http://127.0.0.1/api';
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', alg: 'ES256', use: 'sig' };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId, client_secret: clientSecret, grant_types: ['client_credentials'],
      redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read',
    }],
    jwks: { keys: [jwk] },
    scopes: ['read'],
    clientDefaults: { id_token_signed_response_alg: 'ES256', grant_types: ['client_credentials'], response_types: [] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: 'read', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } }),
      },
    },
  });
  provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
}
