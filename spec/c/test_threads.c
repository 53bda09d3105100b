#include "helpers.h"
void threads_tests(void) {}
