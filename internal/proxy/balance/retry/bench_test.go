package retry

import "testing"

// BenchmarkDeposit measures what every request costs the budget, and
// BenchmarkTryWithdraw what a retry does; in parallel on the real clock.
func BenchmarkDeposit(b *testing.B) {
	budget := benchBudget(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Deposit()
		}
	})
}

func BenchmarkTryWithdraw(b *testing.B) {
	budget := benchBudget(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.TryWithdraw()
		}
	})
}

func benchBudget(b *testing.B) *Budget {
	budget, err := NewBudget(BudgetConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	return budget
}
