// Package meshv1 is the control-plane protocol between rampart-proxy and
// rampart-controller, generated from mesh.proto (make generate). It is the
// only contract the two share; it must not depend on anything but gRPC and
// protobuf.
package meshv1
