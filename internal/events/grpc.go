package events

import (
	"google.golang.org/grpc"

	"github.com/dmsync/dmsync/internal/adminpb"
)

// grpcServer serves the admin API's Events service from a Hub.
type grpcServer struct {
	adminpb.UnimplementedEventsServer
	hub *Hub
}

// Register adds the Events service over hub to g (the daemon's admin gRPC
// server on its unix socket).
func Register(g *grpc.Server, hub *Hub) {
	adminpb.RegisterEventsServer(g, &grpcServer{hub: hub})
}

// ToProto converts an event for the admin API.
func ToProto(e Event) *adminpb.Event {
	return &adminpb.Event{Seq: e.Seq, TimeUnixNano: e.Time.UnixNano(), Kind: string(e.Kind), Volume: e.Volume, Message: e.Message}
}

// Events implements adminpb.EventsServer: the kept events after since,
// then the live ones. When the client falls behind, the hub drops its
// subscription; the stream picks up from the last event sent and marks
// the next one with gap if the ring no longer had what came between.
func (s *grpcServer) Events(req *adminpb.EventsRequest, stream adminpb.Events_EventsServer) error {
	last := req.GetSince()
	if req.GetNow() {
		last = s.hub.Last()
	}
	ctx := stream.Context()
	for {
		sub := s.hub.Subscribe(last)
		gap := sub.Missed
		send := func(e Event) error {
			if e.Seq <= last {
				return nil
			}
			p := ToProto(e)
			p.Gap, gap = gap, false
			if err := stream.Send(p); err != nil {
				return err
			}
			last = e.Seq
			return nil
		}
		for _, e := range sub.Replay {
			if err := send(e); err != nil {
				sub.Close()
				return err
			}
		}
		for open := true; open; {
			select {
			case <-ctx.Done():
				sub.Close()
				return nil
			case e, ok := <-sub.C:
				if !ok {
					open = false // fell behind: resubscribe from last
					break
				}
				if err := send(e); err != nil {
					sub.Close()
					return err
				}
			}
		}
	}
}
