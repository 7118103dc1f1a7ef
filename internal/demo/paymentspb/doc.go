// Package paymentspb is the generated gRPC contract of the demo's payments
// service (payments.proto), which the demo's orders service calls through
// the mesh. It exists for `rampart demo` only; Rampart's own components must
// not import it.
//
// Regenerate with protoc-gen-go and protoc-gen-go-grpc on PATH (the
// repository keeps them in .cache/bin):
//
//	PATH=$PWD/.cache/bin:$PATH go generate ./internal/demo/paymentspb
package paymentspb

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative payments.proto
