// Package accept runs the proxy's accept loops: it hands every accepted
// connection to a handler and outlives what clients can cause. Running
// out of file descriptors or a connection reset before accept makes it
// back off and go on (as net/http does), never stop serving; only the
// listener closing ends it.
//
// It must not depend on Kubernetes packages or on the controller.
package accept

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Backoff bounds of the retry after a failed accept.
const (
	minDelay = 5 * time.Millisecond
	maxDelay = time.Second
)

// Loop accepts on l and calls handle with each connection until ctx ends,
// which closes l, or l is closed otherwise. It returns nil when ctx ended
// and an error when l was closed under it.
func Loop(ctx context.Context, l net.Listener, handle func(net.Conn)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", l.Addr(), err)
			}
			delay = min(max(2*delay, minDelay), maxDelay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		handle(conn)
	}
}
