package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rampart-mesh/rampart/internal/controller"
	"github.com/rampart-mesh/rampart/internal/fsutil"
	"github.com/rampart-mesh/rampart/internal/report"
)

// reportFileMode is the mode of the files rampart report writes: they
// name every workload, identity and certificate of the mesh.
const reportFileMode = 0o600

func newReportCommand() *cobra.Command {
	var admin, since, htmlOut, jsonOut, pdfOut, chromium string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write the compliance report: mTLS coverage, policy coverage, certificates, attestation, detections",
		Long: `Write the compliance report of a period (--since, 1h to 7d, default 24h)
from the controller's GET /api/v1/report: the share of requests over mutual
TLS and the plaintext edges, every workload with the policies that select it
and the workloads and edges without an ALLOW policy, the trust anchors, the
issuer and the workload certificates with their expiry, the attestation
status of every workload (attested code, join token only, revoked,
quarantined), and the denials and detections of the period, with a summary
of findings on top. Traffic comes from the controller's hourly ledger.

The report is written as one self-contained HTML page (-o, default
report.html; "-" for standard output), as JSON (--json) and as PDF (--pdf),
which a headless Chromium prints from the HTML (--chromium names it when it
is not on PATH). The files are written mode 0600: they describe the whole
mesh.`,
		Example: `  rampart report
  rampart report --since 7d -o audit.html --json audit.json --pdf audit.pdf
  rampart report --since 1h -o - --controller-admin 127.0.0.1:15014`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := report.ParsePeriod(since); err != nil {
				return fmt.Errorf("report: --since: %w", err)
			}
			if htmlOut == "" {
				return fmt.Errorf("report: -o: want a file name, or - for standard output")
			}
			var browser string
			if pdfOut != "" {
				var err error
				if browser, err = report.FindChromium(chromium); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			body, err := fetchTraffic(ctx, "report", admin, "/api/v1/report", url.Values{"since": {since}})
			if err != nil {
				return err
			}
			var rep report.Report
			if err := json.Unmarshal(body, &rep); err != nil {
				return fmt.Errorf("report: the controller's answer: %w", err)
			}
			if rep.Version != report.Version {
				return fmt.Errorf("report: the controller answered report version %d; this rampart reads version %d: use the same release for both", rep.Version, report.Version)
			}
			if rep.Period.Duration == "" {
				return fmt.Errorf("report: the controller's answer has no period")
			}
			var html bytes.Buffer
			if err := report.WriteHTML(&html, &rep); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			htmlPath := htmlOut
			if htmlOut == "-" {
				if _, err := html.WriteTo(out); err != nil {
					return fmt.Errorf("report: %w", err)
				}
				htmlPath = ""
			} else {
				if err := fsutil.WriteFileAtomic(htmlOut, html.Bytes(), reportFileMode); err != nil {
					return fmt.Errorf("report: -o: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", htmlOut)
			}
			if jsonOut != "" {
				if err := fsutil.WriteFileAtomic(jsonOut, body, reportFileMode); err != nil {
					return fmt.Errorf("report: --json: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", jsonOut)
			}
			if pdfOut != "" {
				if htmlPath == "" {
					dir, err := os.MkdirTemp("", "rampart-report-")
					if err != nil {
						return fmt.Errorf("report: %w", err)
					}
					defer os.RemoveAll(dir)
					htmlPath = filepath.Join(dir, "report.html")
					if err := os.WriteFile(htmlPath, html.Bytes(), reportFileMode); err != nil {
						return fmt.Errorf("report: %w", err)
					}
				}
				if err := report.PrintPDF(cmd.Context(), browser, htmlPath, pdfOut); err != nil {
					return err
				}
				if err := os.Chmod(pdfOut, reportFileMode); err != nil {
					return fmt.Errorf("report: --pdf: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", pdfOut)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&admin, "controller-admin", controller.DefaultAdminListen, "the controller's admin address (its --admin-listen)")
	fl.StringVar(&since, "since", "24h", "the period: 1h to 7d, in whole hours (36h) or days (7d)")
	fl.StringVarP(&htmlOut, "output", "o", "report.html", `the HTML report; "-" for standard output`)
	fl.StringVar(&jsonOut, "json", "", "also write the report as JSON to this file")
	fl.StringVar(&pdfOut, "pdf", "", "also write the report as PDF to this file (needs Chromium)")
	fl.StringVar(&chromium, "chromium", "", "the Chromium binary that prints the PDF; empty finds chromium on PATH")
	return cmd
}
