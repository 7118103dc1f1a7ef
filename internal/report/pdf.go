package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// ErrNoChromium is returned by FindChromium when no browser is installed.
var ErrNoChromium = errors.New("report: PDF needs a headless Chromium: install the chromium package (Debian, Ubuntu: apt-get install chromium) or name the binary with --chromium")

// chromiumNames are the names Chromium is installed under.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// FindChromium returns path if set (it must be an executable), else the
// first Chromium on PATH.
func FindChromium(path string) (string, error) {
	if path != "" {
		p, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("report: --chromium %q: %w", path, err)
		}
		return p, nil
	}
	for _, n := range chromiumNames {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// PrintTimeout bounds one PDF print.
const PrintTimeout = 2 * time.Minute

// PrintPDF prints the HTML file htmlPath to pdfPath with the headless
// Chromium at chromium, on a temporary profile, and checks that the file
// it wrote is a PDF.
func PrintPDF(ctx context.Context, chromium, htmlPath, pdfPath string) error {
	abs, err := filepath.Abs(htmlPath)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	out, err := filepath.Abs(pdfPath)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	profile, err := os.MkdirTemp("", "rampart-report-chromium-")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(ctx, PrintTimeout)
	defer cancel()
	u := url.URL{Scheme: "file", Path: abs}
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--user-data-dir="+profile,
		"--no-pdf-header-footer",
		"--print-to-pdf="+out,
		u.String())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("report: %s could not print the PDF: %w: %s", chromium, err, tail(stderr.Bytes(), 2000))
	}
	f, err := os.Open(out)
	if err != nil {
		return fmt.Errorf("report: %s wrote no PDF: %w: %s", chromium, err, tail(stderr.Bytes(), 2000))
	}
	defer f.Close()
	head := make([]byte, 5)
	if n, _ := f.Read(head); n < 5 || string(head) != "%PDF-" {
		return fmt.Errorf("report: %s wrote %s, which is not a PDF", chromium, out)
	}
	return nil
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
