package rpctest

import (
	"context"
	"fmt"
	"slices"

	"github.com/dmsync/dmsync/rpc"
)

// Scrub implements rpc.Transport (fault op "scrub", counted once per call;
// each digest message is copied as a wire would).
func (t *Transport) Scrub(ctx context.Context, req rpc.ScrubRequest, each func(rpc.ScrubDigests) error) error {
	if err := t.fault("scrub"); err != nil {
		return err
	}
	req.Ranges = slices.Clone(req.Ranges)
	return t.Recv.Scrub(ctx, t.Peer, req, func(d rpc.ScrubDigests) error {
		d.Sums = slices.Clone(d.Sums)
		return each(d)
	})
}

// PendRegions implements rpc.RegionPender: each region becomes pending with
// a new generation, as logd.Server.PendRegions does.
func (f *FakeLog) PendRegions(uuid string, regions []uint64) error {
	f.mu.Lock()
	v, err := f.vol(uuid)
	if err == nil {
		for _, r := range regions {
			if r >= v.count {
				err = fmt.Errorf("fake log: region %d of %q past its %d regions", r, uuid, v.count)
				break
			}
		}
	}
	if err != nil {
		f.mu.Unlock()
		return err
	}
	for _, r := range regions {
		v.gen[r]++
		v.pending[r] = true
	}
	f.mu.Unlock()
	f.notify(uuid)
	return nil
}
