/**
 * A small type-level reader of JSON Schema: `FromSchema<typeof schema>` is the TypeScript
 * type of the documents the schema accepts. It covers the subset Skein's schemas use
 * (object/properties/required, string, number, integer, boolean, enum, const, array,
 * oneOf) so that a schema written once `as const` is also the type — no second copy.
 *
 * @example
 * const s = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } as const;
 * type S = FromSchema<typeof s>; // { n: number }
 */

type Simplify<T> = { [K in keyof T]: T[K] } & {};

type RequiredKeys<S> = S extends { required: readonly (infer R)[] } ? R & string : never;

type ObjectOf<S> = S extends { properties: infer P }
  ? Simplify<
      { -readonly [K in keyof P as K extends RequiredKeys<S> ? K : never]: FromSchema<P[K]> } & {
        -readonly [K in keyof P as K extends RequiredKeys<S> ? never : K]?: FromSchema<P[K]>;
      } & (S extends { additionalProperties: false } ? unknown : S extends { additionalProperties: infer A } ? A extends object ? Record<string, FromSchema<A>> : unknown : unknown)
    >
  : S extends { additionalProperties: infer A }
    ? A extends object
      ? Record<string, FromSchema<A>>
      : Record<string, unknown>
    : Record<string, unknown>;

export type FromSchema<S> = S extends { const: infer C }
  ? C
  : S extends { enum: readonly (infer E)[] }
    ? E
    : S extends { oneOf: readonly (infer U)[] }
      ? U extends unknown
        ? FromSchema<U>
        : never
      : S extends { type: 'string' }
        ? string
        : S extends { type: 'integer' | 'number' }
          ? number
          : S extends { type: 'boolean' }
            ? boolean
            : S extends { type: 'array'; items: infer I }
              ? FromSchema<I>[]
              : S extends { type: 'object' }
                ? ObjectOf<S>
                : unknown;
