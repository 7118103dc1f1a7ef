package localconfig

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestScratch(t *testing.T) {
	dirs, _ := os.ReadDir("testdata/load")
	for _, d := range dirs {
		start := time.Now()
		res, err := Load(filepath.Join("testdata/load", d.Name()))
		fmt.Printf("=== %s (%v)\n", d.Name(), time.Since(start))
		if err != nil {
			fmt.Println(err)
			continue
		}
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
}
