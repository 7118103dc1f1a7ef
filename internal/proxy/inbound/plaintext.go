package inbound

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rampart-mesh/rampart/internal/proxy/accept"
	"github.com/rampart-mesh/rampart/internal/proxy/metrics"
	"github.com/rampart-mesh/rampart/internal/proxy/origdst"
	"github.com/rampart-mesh/rampart/internal/proxy/sniff"
)

// PlaintextRefused is the action counted for plaintext connections under
// strict mTLS.
const PlaintextRefused = "refused"

// plaintextDetectTimeout bounds how long a refused plaintext connection is
// read from to name its protocol in metrics.
const plaintextDetectTimeout = 200 * time.Millisecond

// ServePlaintext accepts, on l, the connections that iptables redirected
// to the workload from outside the tunnel, until ctx ends. Under strict
// mTLS (the default) each is refused: it is classified by its first bytes
// for the metrics, logged at debug level and closed.
func (h *Handler) ServePlaintext(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Refusing takes a moment (classifying the first bytes); bound how
	// many run at once so that a flood costs a bounded number of
	// goroutines. Beyond that, connections are closed unclassified.
	slots := make(chan struct{}, maxPlaintextRefusals)
	err := accept.Loop(ctx, l, func(conn net.Conn) {
		select {
		case slots <- struct{}{}:
		default:
			h.cfg.Metrics.Plaintext.WithLabelValues("unclassified", PlaintextRefused).Inc()
			conn.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			h.refusePlaintext(conn)
		}()
	})
	if err != nil {
		return fmt.Errorf("inbound: plaintext listener: %w", err)
	}
	return nil
}

// maxPlaintextRefusals bounds the plaintext connections being classified
// at once.
const maxPlaintextRefusals = 256

func (h *Handler) refusePlaintext(conn net.Conn) {
	defer conn.Close()
	dst := "unknown"
	if d, err := origdst.Get(conn); err == nil {
		dst = d.String()
	}
	proto, _, err := sniff.Detect(conn, plaintextDetectTimeout)
	name := proto.String()
	if err != nil {
		name = "none"
	}
	h.cfg.Metrics.Plaintext.WithLabelValues(name, PlaintextRefused).Inc()
	h.log.Debug("refused plaintext connection: the workload requires mTLS",
		"direction", metrics.Inbound, "remote", conn.RemoteAddr().String(), "destination", dst, "protocol", name)
}
