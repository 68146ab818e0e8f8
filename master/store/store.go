// Package store is the master's durable state: a small key/value interface
// and its embedded implementation on bbolt (one file, grid.db, in
// SUTRA_DATA_DIR).
//
// The interface is deliberately narrow — ordered atomic batches of puts and
// deletes, and a full scan of a table at start-up — so that a later backend
// (several masters sharing a replicated log) can implement it without knowing
// the fleet's record types. The fleet package owns the encoding.
//
// Durability: Apply returns only after the batch is committed; bbolt fsyncs
// the data file on every commit, so a batch that Apply acknowledged survives
// kill -9 and power loss. A batch is all-or-nothing.
package store

import (
	"context"
	"errors"
)

// Tables the fleet uses. A backend must accept any table name in Op.Table;
// these are listed so that every backend creates the same set up front.
const (
	TableAgents = "agents"
	TableNodes  = "nodes"
	TableEvents = "events"
	TableMeta   = "meta"
)

// Tables lists every table a backend creates when it opens.
var Tables = []string{TableAgents, TableNodes, TableEvents, TableMeta}

// Op is one write in a batch: Value != nil puts Key=Value, Value == nil deletes Key.
type Op struct {
	Table string
	Key   []byte
	Value []byte
}

// Put returns an Op that stores value under key.
func Put(table string, key, value []byte) Op { return Op{Table: table, Key: key, Value: value} }

// Delete returns an Op that removes key (a missing key is not an error).
func Delete(table string, key []byte) Op { return Op{Table: table, Key: key} }

// Store is the persistence the fleet needs.
type Store interface {
	// Apply commits ops atomically, in order, and durably before returning.
	Apply(ctx context.Context, ops []Op) error
	// Scan calls fn for every key/value of table in ascending key order until
	// fn returns an error, which Scan returns. fn must not retain key or value.
	Scan(ctx context.Context, table string, fn func(key, value []byte) error) error
	// Close releases the store.
	Close() error
}

// ErrUnknownTable is returned for a table the store was not opened with.
var ErrUnknownTable = errors.New("unknown table")
