/**
 * The messages between the main thread and the engine worker, all plain data: token ids
 * and text go across, tensors never do. Errors travel as their name, message and fields
 * and come back as instances of the same typed error class.
 */
import * as errors from '../../core/errors.js';
import type { EngineTuning, SchedulerStats } from '../scheduler/scheduler.js';
import type { CoreEvent, CoreSubmit } from './core.js';
import type { ModelSpec } from './model-spec.js';

export interface WorkerInit extends EngineTuning {
  model: ModelSpec;
}

export type ToWorker = ({ type: 'submit' } & CoreSubmit) | { type: 'cancel'; requestId: string } | { type: 'close' };

export interface WireError {
  name: string;
  message: string;
  [field: string]: unknown;
}

export type WireEvent = Exclude<CoreEvent, { type: 'error' }> | { type: 'error'; requestId: string; error: WireError };

export type FromWorker =
  | { type: 'ready'; backend: string; stats: SchedulerStats; tensors: number }
  /** `tensors`: tf tensors alive in the worker, for leak checks from the main thread. */
  | { type: 'events'; events: WireEvent[]; stats: SchedulerStats; tensors: number }
  | { type: 'fatal'; error: WireError }
  | { type: 'closed' };

export function toWire(err: Error): WireError {
  return { ...(err as unknown as Record<string, unknown>), name: err.name, message: err.message, stack: err.stack };
}

/** Rebuilds a typed error (same class, fields and message) from its wire form. */
export function fromWire(wire: WireError): Error {
  const cls = (errors as Record<string, unknown>)[wire.name];
  const proto = typeof cls === 'function' && cls.prototype instanceof Error ? (cls.prototype as Error) : Error.prototype;
  const err = Object.create(proto) as Error;
  Object.assign(err, wire);
  return err;
}

export function eventToWire(event: CoreEvent): WireEvent {
  return event.type === 'error' ? { ...event, error: toWire(event.error) } : event;
}
