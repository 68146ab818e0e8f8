// Package grpcapi serves the GridMaster gRPC service (proto/grid/v1) on top
// of the fleet. It is the only master package that imports the generated
// protobuf code: it converts messages to the fleet's plain structs and back,
// and maps fleet errors to gRPC status codes:
//
//	fleet.ErrInvalid      -> InvalidArgument
//	fleet.ErrNotFound     -> NotFound (a heartbeat from an unknown agent: register again)
//	fleet.ErrExists       -> AlreadyExists (also: an agent id held by another live instance)
//	fleet.ErrPrecondition -> FailedPrecondition (spawning on an offline agent, removing a live one without force)
//	fleet.ErrExhausted    -> ResourceExhausted (beyond capacity, slow event watcher)
//	fleet.ErrUnavailable  -> Unavailable (the store failed; retry)
//
// ListAgents and ListStorageNodes answer one page at a time (fleet.Page:
// 100 items by default, at most 1000, and at most fleet.MaxPageBytes, so no
// answer reaches a client's 4 MiB limit); a bad page token is
// InvalidArgument.
//
// Every message says what to do next. Who may call what (the operator
// token, agent certificates, revocation) is checked before a handler runs,
// by master/auth's interceptors where the server is built; the caller's
// actor (master/actor) travels in the context into the events the fleet
// records.
package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/master/cluster"
	"github.com/sutragrid/sutra/master/fleet"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Server implements gridv1.GridMasterServer.
type Server struct {
	gridv1.UnimplementedGridMasterServer
	f     *fleet.Fleet
	log   *slog.Logger
	trust *Trust // nil: the trust RPCs are UNIMPLEMENTED
	// clusterStatus, when set, adds the masters, the leader and the
	// store's health to GetClusterStatus.
	clusterStatus func(ctx context.Context) cluster.Status
}

// WithClusterStatus makes GetClusterStatus report the control plane's
// masters and store (cluster.StatusOf).
func (s *Server) WithClusterStatus(fn func(ctx context.Context) cluster.Status) *Server {
	s.clusterStatus = fn
	return s
}

// New returns the GridMaster service over f (logger may be nil).
func New(f *fleet.Fleet, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{f: f, log: logger}
}

// Register adds the GridMaster service to s. (The standard health service
// and reflection are registered by whoever owns s.)
func (s *Server) Register(g *grpc.Server) {
	gridv1.RegisterGridMasterServer(g, s)
}

// toStatus maps a fleet error to a gRPC status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, fleet.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, fleet.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, fleet.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, fleet.ErrPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, fleet.ErrExhausted):
		code = codes.ResourceExhausted
	case errors.Is(err, fleet.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (s *Server) RegisterAgent(ctx context.Context, req *gridv1.RegisterAgentRequest) (*gridv1.RegisterAgentResponse, error) {
	nodes, err := nodeStatusesFromPB(req.GetNodes())
	if err != nil {
		return nil, toStatus(err)
	}
	d, err := s.f.Register(ctx, fleet.Registration{
		AgentID:         req.GetAgentId(),
		Hostname:        req.GetHostname(),
		Platform:        req.GetPlatform(),
		Arch:            req.GetArch(),
		AgentVersion:    req.GetAgentVersion(),
		MaxStorageNodes: req.GetMaxStorageNodes(),
		Labels:          req.GetLabels(),
		InstanceID:      req.GetInstanceId(),
		Nodes:           nodes,
		Upgrade:         upgradeFromPB(req.GetUpgrade()),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	s.settleEnrollment(ctx, req.GetAgentId())
	return &gridv1.RegisterAgentResponse{
		MasterVersion:         s.f.MasterVersion(),
		HeartbeatIntervalSecs: s.intervalSecs(),
		Desired:               desiredToPB(d),
	}, nil
}

func (s *Server) intervalSecs() uint32 {
	return uint32(s.f.HeartbeatInterval().Seconds())
}

func (s *Server) Heartbeat(ctx context.Context, req *gridv1.HeartbeatRequest) (*gridv1.HeartbeatResponse, error) {
	nodes, err := nodeStatusesFromPB(req.GetNodes())
	if err != nil {
		return nil, toStatus(err)
	}
	d, err := s.f.Heartbeat(ctx, fleet.Report{
		AgentID:           req.GetAgentId(),
		AppliedGeneration: req.GetAppliedGeneration(),
		Nodes:             nodes,
		AgentVersion:      req.GetAgentVersion(),
		Upgrade:           upgradeFromPB(req.GetUpgrade()),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &gridv1.HeartbeatResponse{Desired: desiredToPB(d), HeartbeatIntervalSecs: s.intervalSecs()}, nil
}

func (s *Server) UnregisterAgent(ctx context.Context, req *gridv1.UnregisterAgentRequest) (*gridv1.UnregisterAgentResponse, error) {
	if err := s.f.Unregister(ctx, req.GetAgentId(), req.GetForce()); err != nil {
		return nil, toStatus(err)
	}
	return &gridv1.UnregisterAgentResponse{}, nil
}

func (s *Server) SpawnStorageNode(ctx context.Context, req *gridv1.SpawnStorageNodeRequest) (*gridv1.SpawnStorageNodeResponse, error) {
	n, err := s.f.Spawn(ctx, fleet.SpawnRequest{AgentID: req.GetAgentId(), NodeID: req.GetNodeId(), Port: req.GetPort()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &gridv1.SpawnStorageNodeResponse{Node: nodeToPB(n)}, nil
}

func (s *Server) StopStorageNode(ctx context.Context, req *gridv1.StopStorageNodeRequest) (*gridv1.StopStorageNodeResponse, error) {
	n, err := s.f.Stop(ctx, req.GetNodeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &gridv1.StopStorageNodeResponse{Node: nodeToPB(n)}, nil
}

func (s *Server) GetStorageNodeStatus(ctx context.Context, req *gridv1.GetStorageNodeStatusRequest) (*gridv1.StorageNode, error) {
	n, err := s.f.Node(req.GetNodeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return nodeToPB(n), nil
}

// ListStorageNodes answers one page (fleet.DefaultPageSize nodes unless
// page_size says otherwise, at most fleet.MaxPageSize, and never more than
// fleet.MaxPageBytes); clients follow next_page_token.
func (s *Server) ListStorageNodes(ctx context.Context, req *gridv1.ListStorageNodesRequest) (*gridv1.ListStorageNodesResponse, error) {
	p, err := s.f.ListNodes(req.GetAgentId(), pageFromPB(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &gridv1.ListStorageNodesResponse{Nodes: make([]*gridv1.StorageNode, 0, len(p.Nodes)), NextPageToken: p.NextToken}
	for _, n := range p.Nodes {
		out.Nodes = append(out.Nodes, nodeToPB(n))
	}
	return out, nil
}

// ListAgents answers one page, like ListStorageNodes.
func (s *Server) ListAgents(ctx context.Context, req *gridv1.ListAgentsRequest) (*gridv1.ListAgentsResponse, error) {
	p, err := s.f.ListAgents(pageFromPB(req.GetPageSize(), req.GetPageToken()))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &gridv1.ListAgentsResponse{Agents: make([]*gridv1.Agent, 0, len(p.Agents)), NextPageToken: p.NextToken}
	for _, a := range p.Agents {
		out.Agents = append(out.Agents, agentToPB(a))
	}
	return out, nil
}

func (s *Server) GetAgent(ctx context.Context, req *gridv1.GetAgentRequest) (*gridv1.Agent, error) {
	a, err := s.f.Agent(req.GetAgentId())
	if err != nil {
		return nil, toStatus(err)
	}
	return agentToPB(a), nil
}

// SetDesiredVersion returns the agent for a single-agent change. For a
// fleet-wide change (empty agent_id) it returns an Agent without an id whose
// desired versions are the new fleet defaults.
func (s *Server) SetDesiredVersion(ctx context.Context, req *gridv1.SetDesiredVersionRequest) (*gridv1.Agent, error) {
	_, err := s.f.SetDesiredVersion(ctx, fleet.VersionChange{
		AgentID:              req.GetAgentId(),
		StorageServerVersion: req.GetStorageServerVersion(),
		AgentVersion:         req.GetAgentVersion(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	if req.GetAgentId() != "" {
		a, err := s.f.Agent(req.GetAgentId())
		if err != nil {
			return nil, toStatus(err)
		}
		return agentToPB(a), nil
	}
	ss, av := s.f.DefaultVersions()
	return &gridv1.Agent{Desired: &gridv1.DesiredState{StorageServerVersion: ss, AgentVersion: av}}, nil
}

func (s *Server) GetClusterStatus(ctx context.Context, req *gridv1.GetClusterStatusRequest) (*gridv1.ClusterStatus, error) {
	out := clusterToPB(s.f.Cluster())
	if s.clusterStatus != nil {
		addClusterStatus(out, s.clusterStatus(ctx))
	}
	return out, nil
}

func (s *Server) WatchEvents(req *gridv1.WatchEventsRequest, stream grpc.ServerStreamingServer[gridv1.Event]) error {
	err := s.f.Watch(stream.Context(), fleet.WatchOptions{
		Since:  req.GetSinceSeq(),
		Tail:   int(req.GetTail()),
		Follow: !req.GetNoFollow(),
	}, func(e fleet.Event) error {
		return stream.Send(eventToPB(e))
	})
	if err != nil {
		if _, ok := status.FromError(err); ok && !errors.Is(err, fleet.ErrWatcherBehind) {
			return err // a stream error from Send
		}
		return toStatus(err)
	}
	return nil
}
