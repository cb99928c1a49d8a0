//go:build !ipamcrash

package ipam

// crashPoint marks an instant between two durable steps of the disk store.
// Normal builds compile it away; the crash test builds the plugin with
// -tags ipamcrash, where it can kill the process at a chosen instant.
func crashPoint(string) {}
