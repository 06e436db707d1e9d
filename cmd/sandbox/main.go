// Command sandbox will run a hub and two member clusters on real
// kube-apiservers on this machine (issue #4). Until then it says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "sandbox: not yet — the hub and federation it demonstrates are still being built (issues #3 and #4).")
	fmt.Fprintln(os.Stderr, "sandbox: what works today is the member agent's signers; `make test` exercises them against real kube-apiservers.")
	os.Exit(2)
}
