"""Security: request policies (Cedar), outbound URL checks and signing."""
