package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// backendCommand is the argument that makes this program serve as the
// benchmark's Go backend instead of running the benchmark; the benchmark
// starts itself so, so that the backend is a process of its own.
const backendCommand = "backend"

// runBackend serves grpc.health.v1.Health (always SERVING) on -grpc and,
// when -http is given, backendBody over HTTP/1.1 on -http, until SIGTERM.
func runBackend(args []string) error {
	fs := flag.NewFlagSet("sidecars backend", flag.ContinueOnError)
	httpAddr := fs.String("http", "", "HTTP/1.1 listen address (none when empty)")
	grpcAddr := fs.String("grpc", "", "gRPC listen address (none when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	if *httpAddr != "" {
		l, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		body := []byte(backendBody)
		clen := strconv.Itoa(len(body))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{clen}
			w.Write(body)
		})}
		g.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("backend: http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			return srv.Close()
		})
	}
	if *grpcAddr != "" {
		l, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, health.NewServer())
		g.Go(func() error {
			if err := srv.Serve(l); err != nil {
				return fmt.Errorf("backend: grpc: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			srv.Stop()
			return nil
		})
	}
	return g.Wait()
}
