"""Local fake brokers the tests start on 127.0.0.1 (issue 10): runnable by hand too."""
