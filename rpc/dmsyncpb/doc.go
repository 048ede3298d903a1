// Package dmsyncpb holds dmsync's wire protocol: replica.proto and the Go
// code generated from it by gen.sh (committed; rerun gen.sh after editing
// the .proto and commit both).
package dmsyncpb
