/* hls_stream.h: a C-simulation stand-in for Vitis HLS's hls::stream<T>, owned by perfjax.
 *
 * perfjax.kernels.c.hls emits SpMV / SpMM as Vitis-HLS-style C++ (dataflow stages connected by
 * FIFOs) and runs their C simulation with g++, without the Xilinx headers. In C simulation the
 * stages of a DATAFLOW region run one after another, so a stream is an unbounded FIFO: here a
 * std::deque. Reading an empty stream is a design bug (in hardware the reader would stall
 * forever): it aborts with the stream's name. The largest occupancy seen is kept, which tells
 * how deep the FIFO would have to be for the stages to run back to back.
 */
#ifndef PERFJAX_HLS_STREAM_H
#define PERFJAX_HLS_STREAM_H

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace hls {

template <typename T>
class stream {
public:
    explicit stream(const char *name = "stream") : name_(name) {}
    stream(const stream &) = delete;
    stream &operator=(const stream &) = delete;

    void write(const T &value)
    {
        fifo_.push_back(value);
        if (fifo_.size() > high_water_) high_water_ = fifo_.size();
    }

    T read()
    {
        if (fifo_.empty()) {
            std::fprintf(stderr, "hls::stream '%s' read while empty\n", name_.c_str());
            std::abort();
        }
        T value = fifo_.front();
        fifo_.pop_front();
        return value;
    }

    bool read_nb(T &value)
    {
        if (fifo_.empty()) return false;
        value = read();
        return true;
    }

    void operator<<(const T &value) { write(value); }
    void operator>>(T &value) { value = read(); }
    bool empty() const { return fifo_.empty(); }
    bool full() const { return false; }
    std::size_t size() const { return fifo_.size(); }
    std::size_t high_water() const { return high_water_; }
    const std::string &name() const { return name_; }

private:
    std::deque<T> fifo_;
    std::string name_;
    std::size_t high_water_ = 0;
};

}  // namespace hls

#endif
