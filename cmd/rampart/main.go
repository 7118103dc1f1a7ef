// Command rampart is Rampart's command-line tool. For now it runs the local
// demo (`rampart demo`), mints join tokens for workloads outside Kubernetes
// (`rampart token create`) and reports its version. The commands live in
// the other files of this package and the work in internal packages; main
// sets up signals and turns an error into a message and an exit status.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	err := newRootCommand(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rampart:", err)
		os.Exit(1)
	}
}
