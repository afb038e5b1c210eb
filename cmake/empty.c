/* Keeps an object library valid while its folder has no sources yet. */
typedef int terse_empty_translation_unit_t;
