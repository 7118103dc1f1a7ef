package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/telemetry/graph"
)

func newEdgesCommand() *cobra.Command {
	var f trafficFlags
	cmd := &cobra.Command{
		Use:   "edges [namespace/workload]",
		Short: "Show who talks to whom, with both identities, encryption and authorization",
		Long: `Show the edges of the live traffic graph over the last minute (--window):
each caller and destination with their workloads and SPIFFE identities, the
service called, requests per second, success rate, p99 latency, whether the
edge was mutual TLS, and whether it was authorized (no request denied).
SEEN BY says whose proxies reported the edge: the caller's (source), the
destination's, or both; an edge is never counted twice. With a workload,
only the edges from or to it.`,
		Example: `  rampart edges --controller-admin 127.0.0.1:15014
  rampart edges shop/web
  rampart edges -n shop -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query("edges", args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			body, err := fetchTraffic(ctx, "edges", f.admin, "/api/v1/edges", q)
			if err != nil {
				return err
			}
			if f.output == "json" {
				_, err := cmd.OutOrStdout().Write(body)
				return err
			}
			var resp graph.EdgesResponse
			if err := json.Unmarshal(body, &resp); err != nil {
				return fmt.Errorf("edges: the controller's answer: %w", err)
			}
			printEdges(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// printEdges renders the edges as an aligned table.
func printEdges(w io.Writer, resp graph.EdgesResponse) {
	if len(resp.Edges) == 0 {
		fmt.Fprintf(w, "No traffic in the last %s.\n", humanWindow(resp.WindowSeconds))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tSOURCE IDENTITY\tDESTINATION\tSERVICE\tDESTINATION IDENTITY\tRPS\tSUCCESS\tP99\tMTLS\tAUTHORIZED\tSEEN BY")
	for _, e := range resp.Edges {
		p99 := "-"
		if l := e.LatencyMs; l != nil {
			p99 = millis(l.P99)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			edgeEnd(e.Source, "(no proxy)"), orDash(e.Source.Identity),
			edgeEnd(e.Destination, "(outside the mesh)"), orDash(e.Destination.Service), orDash(e.Destination.Identity),
			rps(e.Traffic), percent(e.SuccessRate), p99, yesNo(e.MTLS), authorized(e), e.ReportedBy)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nOver the last %s.\n", humanWindow(resp.WindowSeconds))
}

// edgeEnd names an end of an edge: namespace/workload, else what is known.
func edgeEnd(e graph.EdgeEnd, none string) string {
	switch {
	case e.Workload != "":
		return e.Namespace + "/" + e.Workload
	case e.Identity != "":
		return "(workload unknown)"
	case e.Service != "":
		// The caller addressed a service but reached none of its
		// endpoints (none ready, say).
		return "(no endpoint reached)"
	}
	return none
}

func authorized(e graph.EdgeStat) string {
	if e.Authorized {
		return "yes"
	}
	return fmt.Sprintf("no (%d denied)", e.Denied)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
