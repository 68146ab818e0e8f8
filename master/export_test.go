package master

import (
	"google.golang.org/grpc"

	"github.com/sutragrid/sutra/master/catalog"
)

// RegisterTestService has Run register desc (with no implementation: its
// handlers must not use one) on the master's real gRPC server next to the
// control plane, for this package's external tests.
func RegisterTestService(o *Options, desc *grpc.ServiceDesc) {
	o.testWiring = func(_ *catalog.Catalog, s *grpc.Server) { s.RegisterService(desc, struct{}{}) }
}
