package replicate

import "github.com/dmsync/dmsync/internal/adminpb"

// StateKind classifies the send for machines: the state enum of
// `dmsync status --json`, which the daemon's metrics, events and web view
// use too.
func (s SendStatus) StateKind() adminpb.SendState { return classifySend(s) }
