package netemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// Available returns nil if this process can build networks: it is root, the
// ip tool of iproute2 is installed, and a namespace with a TUN device in it
// can actually be made (a container may refuse either despite uid 0). The
// probe runs once per process, costs a few milliseconds, and its result is
// kept. Tests skip with the error it returns.
func Available() error { return available() }

var available = sync.OnceValue(probe)

func probe() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("netemu: needs root for network namespaces and TUN devices; running as uid %d", uid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netemu: no ip tool; install iproute2: %w", err)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("netemu: no TUN device (modprobe tun, or pass /dev/net/tun into the container): %w", err)
	}
	f.Close()

	n, err := New("avail")
	if err != nil {
		if errors.Is(err, ErrNameInUse) { // a network of that name is open, so it worked
			return nil
		}
		return err
	}
	_, err = n.AddHost("probe", addrRange)
	return errors.Join(err, n.Close())
}
