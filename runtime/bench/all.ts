/** Imports every benchmark module so that each registers itself; one line per module. */
import './decode.js';
import './big.js';
import './sot.js';
import './concurrency.js';
import './prefix.js';
import './loop.js';
import './compress.js';
import './llama-cpp.js';
import './healthz.js';
import './stages.js';
import './soak.js';
import './structured.js';
import './remote.js';
import './speculate.js';
import './kv.js';
