/**
 * Gradients for the kernels the training forward uses. tfjs-core's Node bundle ships no
 * gradient registrations (the full @tensorflow/tfjs bundle does, via
 * register_all_gradients, whose ESM files cannot be imported by Node), so the dozen this
 * model needs are written here against the functional API. Each is registered only when
 * no other module has registered one.
 *
 * @example
 * import './gradients.js'; // before tf.grads / tf.valueAndGrads
 */
import * as tf from '@tensorflow/tfjs-core';

type Grad = (dy: tf.Tensor, saved: tf.Tensor[], attrs: Record<string, unknown>) => Record<string, () => tf.Tensor>;

/** Sums dy over the axes along which `shape` was broadcast, back to `shape`. */
function unbroadcast(dy: tf.Tensor, shape: number[]): tf.Tensor {
  const axes = tf.broadcast_util.getReductionAxes(shape, dy.shape);
  const r = axes.length > 0 ? tf.sum(dy, axes) : dy;
  return tf.reshape(r, shape);
}

const grads: Record<string, { inputs?: string[]; outputs?: boolean[]; all?: boolean; f: Grad }> = {
  Transpose: {
    f: (dy, _s, attrs) => ({ x: () => tf.transpose(dy, tf.backend_util.getUndoAxesPermutation(attrs.perm as number[])) }),
  },
  Reshape: { inputs: ['x'], f: (dy, [x]) => ({ x: () => tf.reshape(dy, x.shape) }) },
  Slice: {
    inputs: ['x'],
    f: (dy, [x], attrs) => {
      const begin = attrs.begin as number[];
      const paddings = dy.shape.map((d, i) => [begin[i], x.shape[i] - begin[i] - d] as [number, number]);
      return { x: () => tf.pad(dy, paddings) };
    },
  },
  Concat: {
    all: true,
    f: (dy, saved, attrs) => {
      const axis = tf.util.parseAxisParam(attrs.axis as number, saved[0].shape)[0];
      const sizes = saved.map((t) => t.shape[axis]);
      const parts = tf.split(dy, sizes, axis);
      return Object.fromEntries(parts.map((p, i) => [String(i), () => p]));
    },
  },
  Neg: { f: (dy) => ({ x: () => tf.neg(dy) }) },
  Multiply: {
    inputs: ['a', 'b'],
    f: (dy, [a, b]) => ({ a: () => unbroadcast(tf.mul(dy, b), a.shape), b: () => unbroadcast(tf.mul(dy, a), b.shape) }),
  },
  Add: { inputs: ['a', 'b'], f: (dy, [a, b]) => ({ a: () => unbroadcast(dy, a.shape), b: () => unbroadcast(dy, b.shape) }) },
  Sub: {
    inputs: ['a', 'b'],
    f: (dy, [a, b]) => ({ a: () => unbroadcast(dy, a.shape), b: () => unbroadcast(tf.neg(dy), b.shape) }),
  },
  RealDiv: {
    inputs: ['a', 'b'],
    f: (dy, [a, b]) => ({
      a: () => unbroadcast(tf.div(dy, b), a.shape),
      b: () => unbroadcast(tf.neg(tf.div(tf.mul(dy, a), tf.square(b))), b.shape),
    }),
  },
  Sigmoid: {
    outputs: [true],
    f: (dy, [y]) => ({ x: () => tf.mul(dy, tf.mul(y, tf.sub(1, y))) }),
  },
  Softmax: {
    outputs: [true],
    f: (dy, [y], attrs) => {
      const dim = attrs.dim as number;
      return { logits: () => tf.mul(y, tf.sub(dy, tf.sum(tf.mul(dy, y), dim, true))) };
    },
  },
  Mean: {
    inputs: ['x'],
    f: (dy, [x], attrs) => {
      const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      const n = axes.reduce((p, a) => p * x.shape[a], 1);
      return { x: () => tf.div(tf.mul(tf.reshape(dy, kept), tf.onesLike(x)), n) };
    },
  },
  Sum: {
    inputs: ['x'],
    f: (dy, [x], attrs) => {
      const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
      const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
      return { x: () => tf.mul(tf.reshape(dy, kept), tf.onesLike(x)) };
    },
  },
  Square: { inputs: ['x'], f: (dy, [x]) => ({ x: () => tf.mul(dy, tf.mul(x, 2)) }) },
  Rsqrt: {
    inputs: ['x'],
    f: (dy, [x]) => ({ x: () => tf.div(dy, tf.mul(tf.pow(x, 1.5), -2)) }),
  },
};

for (const [kernelName, g] of Object.entries(grads)) {
  if (tf.getGradient(kernelName) !== undefined) continue;
  tf.registerGradient({
    kernelName,
    inputsToSave: g.inputs,
    outputsToSave: g.outputs,
    saveAllInputs: g.all,
    gradFunc: g.f as unknown as tf.GradConfig['gradFunc'],
  });
}
