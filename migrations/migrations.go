// Package migrations holds the schema as golang-migrate .up.sql/.down.sql pairs, embedded
// so every binary can apply them.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
