module gortperf

go 1.19
