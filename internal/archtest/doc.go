// Package archtest holds no code: its test checks the module's import graph
// against the layout in STYLE.md, so that a wrong dependency fails CI
// instead of review. cmd/ -> agent|master -> supervisor|internal; no
// package imports its parent (a parent composes its children, never the
// reverse); agent and master never import each other; supervisor uses the
// standard library only; internal imports neither side; one adapter package
// per side imports the generated protobuf code; only test files import
// internal/testutil, which uses the standard library only.
package archtest
