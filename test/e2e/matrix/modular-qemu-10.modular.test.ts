import t from 'tap';
import { modularScenarios } from '../scenarios/modular';
import { STACKS } from '../stacks';

modularScenarios(t, STACKS['modular-qemu-10']);
