package localconfig

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestScratchSpeed(t *testing.T) {
	for _, n := range []int{1 << 18, 1 << 20} {
		var c strings.Builder
		for c.Len() < n {
			c.WriteString("---\na: 1\nb: [1, 2, 3]\n")
		}
		start := time.Now()
		docs, _ := parseStream([]byte(c.String()))
		fmt.Println(n, "docs:", len(docs), time.Since(start))
	}
}
