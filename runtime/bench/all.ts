/** Imports every benchmark module so that each registers itself; one line per module. */
import './decode.js';
